"""Admin-plane mutations leave their lifecycle events (tenant, budget, funding, API key,
policy, the tenant-close cascade), written with the mutation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_events_stream import check_envelope, events_of

from runcycles_server_lite.testing import ServerHandle

UNIT = "USD_MICROCENTS"


def tid() -> str:
    return f"ev-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def types(server: ServerHandle, tenant: str) -> list[str]:
    rows = events_of(server, tenant, sort_dir="asc")
    for ev in rows:
        check_envelope(ev)
    return [e["event_type"] for e in rows]


def one(server: ServerHandle, tenant: str, event_type: str) -> dict[str, Any]:
    [ev] = events_of(server, tenant, event_type=event_type)
    return ev


def test_tenant_lifecycle(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    r = admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "N"})
    assert r.status_code == 201
    created = one(server, t, "tenant.created")
    assert created["source"] == "cycles-admin"
    assert created["actor"]["type"] == "admin"
    assert created["request_id"] == r.headers["x-request-id"]
    assert created["data"] == {"tenant_id": t, "new_status": "ACTIVE", "changed_fields": []}
    # Re-creating the same tenant (200) is not a new event.
    assert admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "N"}).status_code == 200
    admin.patch(f"/v1/admin/tenants/{t}", json={"name": "M"})
    admin.patch(f"/v1/admin/tenants/{t}", json={"default_reservation_ttl_ms": 5000})
    admin.patch(f"/v1/admin/tenants/{t}", json={"status": "SUSPENDED"})
    admin.patch(f"/v1/admin/tenants/{t}", json={"status": "ACTIVE"})
    assert types(server, t) == [
        "tenant.created",
        "tenant.updated",
        "tenant.settings_changed",
        "tenant.suspended",
        "tenant.reactivated",
    ]
    updated = one(server, t, "tenant.updated")
    assert updated["data"]["changed_fields"] == ["name"]
    suspended = one(server, t, "tenant.suspended")
    assert suspended["data"]["previous_status"] == "ACTIVE"
    assert suspended["data"]["new_status"] == "SUSPENDED"


def test_budget_lifecycle_and_funding(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "N"})
    body = {"tenant_id": t, "scope": f"tenant:{t}", "unit": UNIT, "allocated": amt(1000)}
    assert admin.post("/v1/admin/budgets", json=body).status_code == 201
    params = {"tenant_id": t, "scope": f"tenant:{t}", "unit": UNIT}
    r = admin.post(
        "/v1/admin/budgets/fund", params=params, json={"operation": "CREDIT", "amount": amt(500)}
    )
    assert r.status_code == 200, r.text
    admin.post(
        "/v1/admin/budgets/fund", params=params, json={"operation": "DEBIT", "amount": amt(200)}
    )
    admin.post(
        "/v1/admin/budgets/fund",
        params=params,
        json={"operation": "RESET_SPENT", "amount": amt(2000)},
    )
    admin.post("/v1/admin/budgets/freeze", params=params)
    admin.post("/v1/admin/budgets/unfreeze", params=params)
    admin.patch("/v1/admin/budgets", params=params, json={"overdraft_limit": amt(10)})
    assert types(server, t)[1:] == [
        "budget.created",
        "budget.funded",
        "budget.debited",
        "budget.reset_spent",
        "budget.frozen",
        "budget.unfrozen",
        "budget.updated",
    ]
    created = one(server, t, "budget.created")["data"]
    assert created["operation"] == "CREATE"
    assert created["ledger_id"].startswith("ldg_")
    assert created["new_state"]["allocated"] == 1000
    funded = one(server, t, "budget.funded")
    assert funded["scope"] == f"tenant:{t}"
    assert funded["data"]["operation"] == "CREDIT"
    assert funded["data"]["previous_state"]["allocated"] == 1000
    assert funded["data"]["new_state"]["allocated"] == 1500
    assert funded["data"]["new_state"]["remaining"] == 1500
    assert one(server, t, "budget.reset_spent")["data"]["spent_override_provided"] is False
    frozen = one(server, t, "budget.frozen")["data"]
    assert frozen["previous_state"]["status"] == "ACTIVE"
    assert frozen["new_state"]["status"] == "FROZEN"


def test_repaying_debt_exits_over_limit(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    server.provision(t, {"": 100})

    async def over(store: Any) -> None:
        key = store.keys.budget(t, f"tenant:{t}", UNIT)
        await store.redis.hset(
            key, mapping={"remaining": "-50", "spent": "100", "debt": "50", "is_over_limit": "true"}
        )

    server.run_store(over)
    params = {"tenant_id": t, "scope": f"tenant:{t}", "unit": UNIT}
    r = admin.post(
        "/v1/admin/budgets/fund", params=params, json={"operation": "REPAY_DEBT", "amount": amt(50)}
    )
    assert r.status_code == 200, r.text
    assert one(server, t, "budget.debt_repaid")["data"]["new_state"]["debt"] == 0
    exited = one(server, t, "budget.over_limit_exited")
    assert exited["data"]["is_over_limit"] is False


def test_api_key_and_policy_events(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "N"})
    r = admin.post("/v1/admin/api-keys", json={"tenant_id": t, "name": "agent"})
    assert r.status_code == 201
    key_id = r.json()["key_id"]
    secret = r.json()["key_secret"]
    created = one(server, t, "api_key.created")
    assert created["data"]["key_id"] == key_id
    assert created["data"]["key_name"] == "agent"
    assert secret not in str(created)
    admin.patch(f"/v1/admin/api-keys/{key_id}", json={"permissions": ["balances:read"]})
    assert one(server, t, "api_key.permissions_changed")["data"]["permissions"] == ["balances:read"]
    assert admin.delete(f"/v1/admin/api-keys/{key_id}").status_code == 200
    revoked = one(server, t, "api_key.revoked")["data"]
    assert (revoked["previous_status"], revoked["new_status"]) == ("ACTIVE", "REVOKED")
    # Revoking drops the secret's lookup, so presenting it again is an unknown key.
    r = httpx.get(
        f"{server.base_url}/v1/balances", params={"tenant": t}, headers={"X-Cycles-API-Key": secret}
    )
    assert r.status_code == 401
    failed = [
        e
        for e in events_of(server, "__system__", event_type="api_key.auth_failed")
        if e.get("request_id") == r.headers["x-request-id"]
    ]
    assert [e["data"]["failure_reason"] for e in failed] == ["key_not_found"]

    pol = {"tenant_id": t, "name": 'eng "default"', "scope_pattern": f"tenant:{t}/*"}
    r = admin.post("/v1/admin/policies", json=pol)
    assert r.status_code == 201, r.text
    ev = one(server, t, "policy.created")
    assert ev["data"] == {
        "policy_id": r.json()["policy_id"],
        "name": 'eng "default"',
        "scope_pattern": f"tenant:{t}/*",
    }
    admin.patch(f"/v1/admin/policies/{r.json()['policy_id']}", json={"priority": 3})
    assert one(server, t, "policy.updated")["data"]["policy_id"] == r.json()["policy_id"]


def test_tenant_close_cascade_events(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    secret = server.provision(t, {"": 100})
    with httpx.Client(base_url=server.base_url, headers={"X-Cycles-API-Key": secret}) as c:
        body = {
            "idempotency_key": uuid.uuid4().hex,
            "subject": {"tenant": t},
            "action": {"kind": "llm", "name": "m"},
            "estimate": amt(30),
        }
        assert c.post("/v1/reservations", json=body).status_code == 200
    assert admin.patch(f"/v1/admin/tenants/{t}", json={"status": "CLOSED"}).status_code == 200
    seen = types(server, t)
    assert "tenant.closed" in seen
    closed = one(server, t, "budget.closed_via_tenant_cascade")["data"]
    assert closed["prior_status"] == "ACTIVE"
    assert closed["new_status"] == "CLOSED"
    assert closed["cascade_reason"] == "tenant_closed"
    released = one(server, t, "reservation.released_via_tenant_cascade")["data"]
    assert released["released_amount"] == 30
    revoked = one(server, t, "api_key.revoked_via_tenant_cascade")["data"]
    assert revoked["new_status"] == "REVOKED"


def amt(n: int) -> dict[str, Any]:
    return {"unit": UNIT, "amount": n}
