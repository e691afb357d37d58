"""Every admin-plane response body checked against the server's own contract (the schemas of
``GET /openapi.json``); the conformance session checks the same flow against the upstream spec."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from contract_support import conforms, violations

from runcycles_server_lite.testing import ServerHandle

UNIT = "USD_MICROCENTS"


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def test_the_checker_catches_violations() -> None:
    bad = {"tenant_id": "x", "status": "MAYBE", "extra": 1, "created_at": "yesterday"}
    found = " | ".join(violations(bad, "Tenant"))
    assert "'name' is a required property" in found
    assert "'extra' was unexpected" in found
    assert "'MAYBE' is not one of" in found
    assert "'yesterday' is not a 'date-time'" in found


def test_admin_responses_match_the_contract(
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
        assert violations(r.json(), "AdminErrorResponse") == []
