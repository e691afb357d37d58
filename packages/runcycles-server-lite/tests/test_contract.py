"""The served contract (``GET /openapi.json``): it lists exactly the routes the app serves, its
schemas are valid JSON Schema, and every runtime-plane body the server renders matches it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from contract_support import conforms, response_schema, violations
from jsonschema import Draft202012Validator
from runtime_support import ACTION, UNIT, TenantFactory, amount, key, mk

from runcycles_server_lite import Settings, admin, create_app, events_api, runtime
from runcycles_server_lite.contract import OPENAPI_PATH, OPERATIONS, openapi_document
from runcycles_server_lite.testing import ServerHandle
from runcycles_server_lite.webhooks import api as webhooks_api

__all__ = ["mk"]  # the fixture, re-exported for pytest


def test_served_document_is_the_contract(http: httpx.Client) -> None:
    r = http.get(OPENAPI_PATH)  # no key: the document holds shapes, not data
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == openapi_document()
    assert r.json()["openapi"].startswith("3.1")


def test_admin_only_app_serves_it_too() -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"), admin_only=True)
    assert OPENAPI_PATH in {getattr(r, "path", None) for r in app.routes}


def test_operations_are_exactly_the_routes_served() -> None:
    served = set()
    routes = [*runtime.routes(), *admin.routes(), *events_api.routes(), *webhooks_api.routes()]
    for route in routes:
        for method in route.methods or ():  # type: ignore[attr-defined]
            if method != "HEAD":
                served.add((method.lower(), route.path))  # type: ignore[attr-defined]
    documented = {(op.method, op.path) for op in OPERATIONS}
    assert documented == served
    assert len({op.operation_id for op in OPERATIONS}) == len(OPERATIONS)


def test_every_schema_is_valid_and_every_reference_resolves() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"].rsplit("/", 1)[1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    walk(doc)
    assert refs <= set(schemas), refs - set(schemas)
    # Optional fields are omitted on the wire, so the contract never allows null.
    assert "'null'" not in str(schemas)


def test_every_operation_documents_its_errors_and_success() -> None:
    for op in OPERATIONS:
        statuses = set(op.responses)
        assert {400, 401, 403, 500} <= statuses, op.operation_id
        assert any(200 <= s < 300 for s in statuses), op.operation_id
        error = "AdminErrorResponse" if op.admin_plane else "ErrorResponse"
        assert all(op.responses[s] == error for s in statuses if s >= 400), op.operation_id


def test_the_checker_catches_runtime_violations() -> None:
    bad = {"decision": "MAYBE", "affected_scopes": "tenant:a", "reserved": {"unit": "X"}}
    found = " | ".join(violations(bad, "ReservationCreateResponse"))
    assert "'MAYBE' is not one of" in found
    assert "'tenant:a' is not of type 'array'" in found
    assert "'amount' is a required property" in found
    assert violations({"error": "NOPE", "message": "m", "request_id": "r"}, "ErrorResponse")
    assert violations({"balances": [], "has_more": None}, "BalanceResponse")


def _conforms(r: httpx.Response, method: str, path: str, status: int) -> Any:
    """``r`` has ``status``, which the contract documents for the operation, with its schema."""
    name = response_schema(method, path, status)
    assert name is not None, f"{method} {path} does not document {status}"
    return conforms(r, name, status)


R = "/v1/reservations"
RID = "/v1/reservations/{reservation_id}"


def test_runtime_responses_match_the_contract(mk: TenantFactory) -> None:
    t = mk({"": 1_000_000, "workspace:w": 500_000})
    sub = t.subject(workspace="w")
    _conforms(t.decide(10, subject=sub), "post", "/v1/decide", 200)
    res = _conforms(t.reserve(100, subject=sub), "post", R, 200)
    rid = res["reservation_id"]
    _conforms(t.reserve(1, subject=sub, dry_run=True), "post", R, 200)
    _conforms(t.reserve(10**12, subject=sub), "post", R, 409)
    _conforms(t.extend(rid, 1000), "post", RID + "/extend", 200)
    _conforms(t.http.get(f"{R}/{rid}"), "get", RID, 200)
    _conforms(t.http.get(R, params={"limit": 1}), "get", R, 200)
    _conforms(t.commit(rid, 60), "post", RID + "/commit", 200)
    _conforms(t.commit(rid, 60), "post", RID + "/commit", 409)
    other = t.reserve_ok(5, subject=sub)
    _conforms(t.release(other), "post", RID + "/release", 200)
    _conforms(t.extend(other, 1000), "post", RID + "/extend", 409)
    _conforms(t.event(7, subject=sub), "post", "/v1/events", 201)
    _conforms(t.http.get("/v1/balances", params={"tenant": t.name}), "get", "/v1/balances", 200)
    _conforms(t.http.get(f"{R}/nope-{uuid.uuid4().hex}"), "get", RID, 404)
    _conforms(t.http.post(R, json={"subject": sub}), "post", R, 400)
    anon = httpx.post(f"{t.server.base_url}{R}", json={}, timeout=10)
    _conforms(anon, "post", R, 401)
    body = {
        "idempotency_key": key(),
        "subject": {"tenant": "someone-else"},
        "action": ACTION,
        "estimate": amount(1),
    }
    _conforms(t.http.post(R, json=body), "post", R, 403)
    unbudgeted = mk()
    _conforms(unbudgeted.reserve(1), "post", R, 404)
    _conforms(t.reserve(1, subject=sub, unit="TOKENS"), "post", R, 400)
    assert UNIT == "USD_MICROCENTS"


def test_admin_on_behalf_of_runtime_reads_match_the_contract(
    server: ServerHandle, mk: TenantFactory
) -> None:
    t = mk({"": 1_000})
    rid = t.reserve_ok(10)
    with server.admin_client() as a:
        _conforms(a.get(R, params={"tenant": t.name}), "get", R, 200)
        _conforms(a.get(f"{R}/{rid}"), "get", RID, 200)
        _conforms(a.get(R), "get", R, 400)
        _conforms(
            a.post(f"{R}/{rid}/release", json={"idempotency_key": key()}),
            "post",
            RID + "/release",
            200,
        )
