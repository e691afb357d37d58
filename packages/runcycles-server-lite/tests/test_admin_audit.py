"""Audit log: admin-plane mutations leave entries, queryable with the spec's filters."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from runcycles_server_lite.testing import ServerHandle

UNIT = "USD_MICROCENTS"


def tid() -> str:
    return f"au-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def logs(admin: httpx.Client, **params: object) -> list[dict[str, object]]:
    r = admin.get("/v1/admin/audit/logs", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    entries: list[dict[str, object]] = r.json()["logs"]
    return entries


def test_admin_mutations_are_audited_with_correlation_ids(admin: httpx.Client) -> None:
    t = tid()
    created = admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "A"})
    key = admin.post("/v1/admin/api-keys", json={"tenant_id": t, "name": "k"}).json()
    admin.delete(f"/v1/admin/api-keys/{key['key_id']}")
    mine = logs(admin, tenant_id="__admin__", search=t)
    assert [e["operation"] for e in mine] == ["createTenant"]  # newest first, search by id
    entry = mine[0]
    assert entry["resource_type"] == "tenant"
    assert entry["resource_id"] == t
    assert entry["status"] == 201
    assert entry["request_id"] == created.headers["x-request-id"]
    assert entry["trace_id"] == created.headers["x-cycles-trace-id"]
    assert re.fullmatch(r"log_[0-9a-f]{16}", str(entry["log_id"]))
    by_key = logs(admin, resource_id=key["key_id"])
    assert [e["operation"] for e in by_key] == ["revokeApiKey", "createApiKey"]
    by_trace = logs(admin, trace_id=created.headers["x-cycles-trace-id"])
    assert len(by_trace) == 1


def test_failures_are_audited_and_attributed(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    secret = server.provision(t, {"": 10}, permissions=["budgets:read"])
    headers = {"X-Cycles-API-Key": secret}
    params = {"scope": f"tenant:{t}", "unit": UNIT}
    body = {"operation": "CREDIT", "amount": {"unit": UNIT, "amount": 1}}
    with httpx.Client(base_url=server.base_url) as http:
        r = http.post("/v1/admin/budgets/fund", params=params, json=body, headers=headers)
        assert r.status_code == 403
        r = http.post(
            "/v1/admin/budgets/fund",
            params=params,
            json=body,
            headers={"X-Cycles-API-Key": "cyc_live_bogus", "X-Cycles-Trace-Id": "ab" * 16},
        )
        assert r.status_code == 401
    denied = logs(admin, tenant_id=t)
    assert [(e["operation"], e["status"], e["error_code"]) for e in denied] == [
        ("fundBudget", 403, "FORBIDDEN")
    ]
    assert str(denied[0]["key_id"]).startswith("key_")
    unauth = logs(admin, tenant_id="__unauth__", trace_id="ab" * 16)
    assert [(e["operation"], e["status"]) for e in unauth] == [("fundBudget", 401)]
    # Status and error-code filters.
    assert logs(admin, tenant_id=t, status_min=500) == []
    assert logs(admin, tenant_id=t, error_code_exclude="FORBIDDEN") == []


def test_audit_query_validation_and_auth(admin: httpx.Client, http: httpx.Client) -> None:
    assert http.get("/v1/admin/audit/logs").status_code == 401
    for bad in ({"from": "yesterday"}, {"status_min": 99}, {"limit": 0}, {"search": "x" * 129}):
        assert admin.get("/v1/admin/audit/logs", params=bad).status_code == 400
    assert logs(admin, **{"from": "2999-01-01T00:00:00Z"}) == []
