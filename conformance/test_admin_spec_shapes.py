"""Every admin-plane response body checked against the upstream admin spec's own schemas (the
default tests run the same flow against the server's contract)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from upstream import ADMIN_SPEC, load

from runcycles_server_lite.testing import ServerHandle, running_server

DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
UNIT = "USD_MICROCENTS"


def schemas() -> dict[str, Any]:
    found: dict[str, Any] = load(ADMIN_SPEC)["components"]["schemas"]
    return found


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = {
            **schemas()[schema["$ref"].rsplit("/", 1)[1]],
            **{k: v for k, v in schema.items() if k not in ("$ref", "description")},
        }
    return schema


def violations(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (the subset of JSON Schema the spec uses)."""
    s = resolve(schema)
    kind = s.get("type")
    out: list[str] = []
    if "enum" in s and value not in s["enum"]:
        out.append(f"{path}: {value!r} not in {s['enum']}")
    if kind == "object" or "properties" in s:
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {value!r}"]
        props = s.get("properties", {})
        out += [f"{path}: missing {r}" for r in s.get("required", []) if r not in value]
        if s.get("additionalProperties") is False:
            out += [f"{path}: unexpected {k}" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                out += violations(v, props[k], f"{path}.{k}")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected an array"]
        for i, item in enumerate(value):
            out += violations(item, s.get("items", {}), f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            out.append(f"{path}: expected a string, got {value!r}")
        elif s.get("format") == "date-time" and not DATE_TIME.match(value):
            out.append(f"{path}: {value!r} is not a date-time")
        elif "pattern" in s and not re.search(s["pattern"], value):
            out.append(f"{path}: {value!r} does not match {s['pattern']}")
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"{path}: expected an integer, got {value!r}")
        elif "minimum" in s and value < s["minimum"]:
            out.append(f"{path}: {value} < {s['minimum']}")
    elif kind == "boolean" and not isinstance(value, bool):
        out.append(f"{path}: expected a boolean, got {value!r}")
    return out


def conforms(response: httpx.Response, name: str, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert violations(body, {"$ref": f"#/components/schemas/{name}"}) == []
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with running_server(tmp_path_factory.mktemp("store")) as srv:
        yield srv


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def test_the_checker_catches_violations() -> None:
    bad = {"tenant_id": "x", "status": "MAYBE", "extra": 1, "created_at": "yesterday"}
    found = violations(bad, {"$ref": "#/components/schemas/Tenant"})
    assert "$: missing name" in found
    assert "$: unexpected extra" in found
    assert any("MAYBE" in v for v in found)
    assert any("yesterday" in v for v in found)


def test_admin_responses_match_the_spec(
    server: ServerHandle, admin: httpx.Client, http: httpx.Client
) -> None:
    t = f"sh-{uuid.uuid4().hex[:10]}"
    body = {
        "tenant_id": t,
        "name": "Shapes",
        "metadata": {"team": "x"},
        "default_commit_overage_policy": "REJECT",
        "default_reservation_ttl_ms": 30_000,
    }
    conforms(admin.post("/v1/admin/tenants", json=body), "Tenant", 201)
    conforms(admin.post("/v1/admin/tenants", json=body), "Tenant", 200)
    conforms(admin.get(f"/v1/admin/tenants/{t}"), "Tenant")
    conforms(admin.get("/v1/admin/tenants", params={"search": t}), "TenantListResponse")

    key = conforms(
        admin.post("/v1/admin/api-keys", json={"tenant_id": t, "name": "k"}),
        "ApiKeyCreateResponse",
        201,
    )
    conforms(admin.get("/v1/admin/api-keys", params={"tenant_id": t}), "ApiKeyListResponse")
    conforms(
        admin.patch(f"/v1/admin/api-keys/{key['key_id']}", json={"description": "d"}), "ApiKey"
    )
    tenant_headers = {"X-Cycles-API-Key": key["key_secret"]}

    scope = f"tenant:{t}"
    created = http.post(
        "/v1/admin/budgets",
        json={
            "scope": scope,
            "unit": UNIT,
            "allocated": {"unit": UNIT, "amount": 1000},
            "period_start": "2026-01-01T00:00:00Z",
        },
        headers=tenant_headers,
    )
    conforms(created, "BudgetLedger", 201)
    params = {"scope": scope, "unit": UNIT}
    conforms(admin.get("/v1/admin/budgets/lookup", params=params), "BudgetLedger")
    conforms(admin.get("/v1/admin/budgets", params={"tenant_id": t}), "BudgetListResponse")
    conforms(
        admin.patch(
            "/v1/admin/budgets",
            params=params,
            json={"overdraft_limit": {"unit": UNIT, "amount": 5}},
        ),
        "BudgetLedger",
    )
    conforms(admin.post("/v1/admin/budgets/freeze", params=params), "BudgetLedger")
    conforms(admin.post("/v1/admin/budgets/unfreeze", params=params), "BudgetLedger")
    for op in ("CREDIT", "DEBIT", "RESET", "RESET_SPENT", "REPAY_DEBT"):
        r = admin.post(
            "/v1/admin/budgets/fund",
            params={**params, "tenant_id": t},
            json={"operation": op, "amount": {"unit": UNIT, "amount": 10}},
        )
        conforms(r, "BudgetFundingResponse")
    conforms(
        admin.post(
            "/v1/admin/budgets/bulk-action",
            json={
                "filter": {"tenant_id": t},
                "action": "CREDIT",
                "amount": {"unit": UNIT, "amount": 1},
                "idempotency_key": uuid.uuid4().hex,
            },
        ),
        "BudgetBulkActionResponse",
    )

    pol = conforms(
        http.post(
            "/v1/admin/policies",
            json={"name": "p", "scope_pattern": f"{scope}/*", "caps": {"max_tokens": 1}},
            headers=tenant_headers,
        ),
        "Policy",
        201,
    )
    conforms(http.get("/v1/admin/policies", headers=tenant_headers), "PolicyListResponse")
    conforms(admin.patch(f"/v1/admin/policies/{pol['policy_id']}", json={"priority": 2}), "Policy")

    conforms(admin.get("/v1/auth/introspect"), "AuthIntrospectResponse")
    conforms(http.get("/v1/auth/introspect", headers=tenant_headers), "AuthIntrospectResponse")
    conforms(
        admin.post("/v1/auth/validate", json={"key_secret": key["key_secret"]}),
        "ApiKeyValidationResponse",
    )
    conforms(admin.get("/v1/admin/audit/logs", params={"limit": 5}), "AuditLogListResponse")
    conforms(admin.get("/v1/admin/overview"), "AdminOverviewResponse")
    conforms(
        admin.post(
            "/v1/admin/tenants/bulk-action",
            json={
                "filter": {"search": t},
                "action": "SUSPEND",
                "idempotency_key": uuid.uuid4().hex,
            },
        ),
        "TenantBulkActionResponse",
    )
    conforms(admin.delete(f"/v1/admin/api-keys/{key['key_id']}"), "ApiKey")
    conforms(admin.patch(f"/v1/admin/tenants/{t}", json={"status": "CLOSED"}), "Tenant")
    # Errors use the admin ErrorResponse, with codes from the admin ErrorCode enum.
    for r in (
        admin.get(f"/v1/admin/tenants/{t}-nope"),
        admin.post("/v1/admin/tenants", json={"tenant_id": "x"}),
        http.get("/v1/admin/budgets"),
        admin.patch(f"/v1/admin/tenants/{t}", json={"status": "ACTIVE"}),
        admin.get("/v1/admin/budgets/lookup", params={"scope": f"{scope}/agent:z", "unit": UNIT}),
    ):
        assert violations(r.json(), {"$ref": "#/components/schemas/ErrorResponse"}) == []
