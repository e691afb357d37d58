"""Admin plane: budget ledgers (create, lookup, list with filters, patch, freeze/unfreeze)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle

UNIT = "USD_MICROCENTS"


def tid() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def amt(n: int, unit: str = UNIT) -> dict[str, object]:
    return {"unit": unit, "amount": n}


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def _tenant(admin: httpx.Client) -> str:
    t = tid()
    assert admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": t}).status_code == 201
    return t


def set_ledger(server: ServerHandle, tenant: str, scope: str, **fields: int) -> None:
    """Put a ledger into a given state directly (as the runtime would have left it)."""

    async def go(store: Store) -> None:
        key = store.keys.budget(tenant, scope, UNIT)
        await store.redis.hset(key, mapping={k: str(v) for k, v in fields.items()})

    server.run_store(go)


def test_create_budget_with_admin_key(admin: httpx.Client) -> None:
    t = _tenant(admin)
    body = {
        "tenant_id": t,
        "scope": f"Tenant:{t}/Workspace:Prod",
        "unit": UNIT,
        "allocated": amt(1_000),
        "overdraft_limit": amt(50),
        "commit_overage_policy": "ALLOW_WITH_OVERDRAFT",
        "period_start": "2026-01-01T00:00:00Z",
    }
    r = admin.post("/v1/admin/budgets", json=body)
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["scope"] == f"tenant:{t}/workspace:prod"
    assert b["tenant_id"] == t
    assert b["allocated"] == amt(1_000)
    assert b["remaining"] == amt(1_000)
    assert b["reserved"] == b["spent"] == b["debt"] == amt(0)
    assert b["overdraft_limit"] == amt(50)
    assert b["is_over_limit"] is False
    assert b["status"] == "ACTIVE"
    assert b["period_start"] == "2026-01-01T00:00:00.000Z"
    assert b["ledger_id"].startswith("ldg_")
    r = admin.post("/v1/admin/budgets", json=body)
    assert r.status_code == 409
    assert r.json()["error"] == "DUPLICATE_RESOURCE"


def test_create_budget_validation(admin: httpx.Client) -> None:
    t = _tenant(admin)
    ok = {"tenant_id": t, "scope": f"tenant:{t}", "unit": UNIT, "allocated": amt(1)}
    cases: list[tuple[dict[str, object], int, str]] = [
        ({k: v for k, v in ok.items() if k != "tenant_id"}, 400, "INVALID_REQUEST"),
        ({**ok, "scope": "workspace:x"}, 400, "INVALID_REQUEST"),
        ({**ok, "scope": f"tenant:{t}/agent:a/workspace:w"}, 400, "INVALID_REQUEST"),
        ({**ok, "scope": f"tenant:{tid()}"}, 400, "INVALID_REQUEST"),
        ({**ok, "allocated": amt(1, "TOKENS")}, 400, "UNIT_MISMATCH"),
        ({**ok, "allocated": amt(-1)}, 400, "INVALID_REQUEST"),
        ({**ok, "allocated": amt(2**63)}, 400, "INVALID_REQUEST"),
        ({**ok, "unit": "EUROS"}, 400, "INVALID_REQUEST"),
        ({**ok, "tenant_id": tid(), "scope": "tenant:nobody-here"}, 400, "INVALID_REQUEST"),
    ]
    for body, status, code in cases:
        r = admin.post("/v1/admin/budgets", json=body)
        assert (r.status_code, r.json()["error"]) == (status, code), body
    ghost = tid()
    r = admin.post(
        "/v1/admin/budgets",
        json={"tenant_id": ghost, "scope": f"tenant:{ghost}", "unit": UNIT, "allocated": amt(1)},
    )
    assert r.status_code == 400
    assert r.json()["error"] == "TENANT_NOT_FOUND"


def test_create_budget_with_tenant_key(server: ServerHandle, http: httpx.Client) -> None:
    t = tid()
    secret = server.provision(t)
    headers = {"X-Cycles-API-Key": secret}
    body = {"scope": f"tenant:{t}/agent:bot", "unit": "TOKENS", "allocated": amt(9, "TOKENS")}
    r = http.post("/v1/admin/budgets", json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == t
    r = http.post("/v1/admin/budgets", json={**body, "tenant_id": t}, headers=headers)
    assert r.status_code == 400
    assert http.post("/v1/admin/budgets", json=body).status_code == 401


def test_lookup_budget(server: ServerHandle, admin: httpx.Client, http: httpx.Client) -> None:
    t = tid()
    secret = server.provision(t, {"workspace:w": 70})
    scope = f"tenant:{t}/workspace:w"
    r = admin.get("/v1/admin/budgets/lookup", params={"scope": scope, "unit": UNIT})
    assert r.status_code == 200
    assert r.json()["allocated"] == amt(70)
    r = http.get(
        "/v1/admin/budgets/lookup",
        params={"scope": scope, "unit": UNIT},
        headers={"X-Cycles-API-Key": secret},
    )
    assert r.status_code == 200
    r = admin.get("/v1/admin/budgets/lookup", params={"scope": scope, "unit": "TOKENS"})
    assert r.status_code == 404
    assert r.json()["error"] == "BUDGET_NOT_FOUND"
    assert admin.get("/v1/admin/budgets/lookup", params={"scope": scope}).status_code == 400
    r = admin.get("/v1/admin/budgets/lookup", params={"scope": "agent:x", "unit": UNIT})
    assert r.status_code == 400


def test_list_budgets_filters_sort_and_pages(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    server.provision(t, {"": 1000, "workspace:a": 100, "workspace:b": 100, "workspace:c": 100})
    set_ledger(server, t, f"tenant:{t}/workspace:a", spent=90, remaining=10)
    set_ledger(server, t, f"tenant:{t}/workspace:b", spent=50, remaining=50)
    set_ledger(
        server, t, f"tenant:{t}/workspace:c", spent=100, debt=20, remaining=-20, allocated=100
    )
    admin.patch(
        "/v1/admin/budgets",
        params={"scope": f"tenant:{t}/workspace:c", "unit": UNIT},
        json={"overdraft_limit": amt(10)},
    )

    def scopes(**params: object) -> list[str]:
        r = admin.get("/v1/admin/budgets", params={"tenant_id": t, **params})
        assert r.status_code == 200, r.text
        return [b["scope"].removeprefix(f"tenant:{t}") for b in r.json()["ledgers"]]

    assert scopes() == ["", "/workspace:a", "/workspace:b", "/workspace:c"]
    assert scopes(scope_prefix=f"tenant:{t}/workspace:") == [
        "/workspace:a",
        "/workspace:b",
        "/workspace:c",
    ]
    assert scopes(has_debt="true") == ["/workspace:c"]
    assert scopes(over_limit="true") == ["/workspace:c"]
    assert scopes(utilization_min=0.5, utilization_max=0.95) == ["/workspace:a", "/workspace:b"]
    assert scopes(sort_by="utilization") == ["/workspace:c", "/workspace:a", "/workspace:b", ""]
    assert scopes(sort_by="debt", sort_dir="desc")[0] == "/workspace:c"
    assert scopes(unit="TOKENS") == []
    assert scopes(search="workspace:b") == ["/workspace:b"]
    page = admin.get("/v1/admin/budgets", params={"tenant_id": t, "limit": 3}).json()
    assert len(page["ledgers"]) == 3
    assert page["has_more"] is True
    rest = admin.get(
        "/v1/admin/budgets", params={"tenant_id": t, "limit": 3, "cursor": page["next_cursor"]}
    ).json()
    assert [b["scope"] for b in rest["ledgers"]] == [f"tenant:{t}/workspace:c"]
    assert rest["has_more"] is False
    bad = {"tenant_id": t, "utilization_min": 0.9, "utilization_max": 0.1}
    assert admin.get("/v1/admin/budgets", params=bad).status_code == 400
    assert admin.get("/v1/admin/budgets", params={"over_limit": "maybe"}).status_code == 400
    # Without tenant_id the admin key lists across tenants.
    everyone = admin.get("/v1/admin/budgets", params={"search": t, "limit": 100}).json()
    assert len(everyone["ledgers"]) == 4


def test_patch_budget_recomputes_over_limit(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    server.provision(t, {"": 100})
    scope = f"tenant:{t}"
    set_ledger(server, t, scope, spent=100, debt=30, remaining=-30)
    params = {"scope": scope, "unit": UNIT}
    r = admin.patch("/v1/admin/budgets", params=params, json={"overdraft_limit": amt(10)})
    assert r.status_code == 200, r.text
    assert r.json()["overdraft_limit"] == amt(10)
    assert r.json()["is_over_limit"] is True
    r = admin.patch(
        "/v1/admin/budgets",
        params=params,
        json={"overdraft_limit": amt(30), "commit_overage_policy": "REJECT", "metadata": {"a": 1}},
    )
    assert r.json()["is_over_limit"] is False
    assert r.json()["commit_overage_policy"] == "REJECT"
    r = admin.patch("/v1/admin/budgets", params=params, json={"overdraft_limit": amt(1, "TOKENS")})
    assert r.json()["error"] == "UNIT_MISMATCH"
    r = admin.patch(
        "/v1/admin/budgets", params={"scope": f"{scope}/agent:x", "unit": UNIT}, json={}
    )
    assert r.status_code == 404
    assert admin.patch("/v1/admin/budgets", params=params, json={"status": "X"}).status_code == 400


def test_freeze_and_unfreeze(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    server.provision(t, {"": 100})
    params = {"scope": f"tenant:{t}", "unit": UNIT}
    r = admin.post("/v1/admin/budgets/freeze", params=params)
    assert r.status_code == 200
    assert r.json()["status"] == "FROZEN"
    r = admin.post("/v1/admin/budgets/freeze", params=params, json={"reason": "again"})
    assert r.status_code == 409
    assert r.json()["error"] == "BUDGET_FROZEN"
    # Frozen budgets refuse funding but accept property updates.
    r = admin.post(
        "/v1/admin/budgets/fund",
        params={**params, "tenant_id": t},
        json={"operation": "CREDIT", "amount": amt(1)},
    )
    assert r.status_code == 409
    assert r.json()["error"] == "BUDGET_FROZEN"
    r = admin.patch("/v1/admin/budgets", params=params, json={"overdraft_limit": amt(5)})
    assert r.status_code == 200
    r = admin.post("/v1/admin/budgets/unfreeze", params=params)
    assert r.json()["status"] == "ACTIVE"
    assert admin.post("/v1/admin/budgets/unfreeze", params=params).status_code == 409
    missing = {"scope": f"tenant:{t}/agent:none", "unit": UNIT}
    assert admin.post("/v1/admin/budgets/freeze", params=missing).status_code == 404
    bad = admin.post("/v1/admin/budgets/freeze", params=params, json={"bogus": True})
    assert bad.status_code == 400


def test_bulk_action_budgets_resets_a_subtree(server: ServerHandle, admin: httpx.Client) -> None:
    t = tid()
    server.provision(t, {"": 1000, "workspace:eng": 500, "workspace:eng/agent:a": 100})
    server.provision(t, {"workspace:ops": 7}, unit="TOKENS")
    set_ledger(server, t, f"tenant:{t}/workspace:eng", spent=300, remaining=200)
    set_ledger(server, t, f"tenant:{t}/workspace:eng/agent:a", spent=100, remaining=0)
    url = "/v1/admin/budgets/bulk-action"
    body = {
        "filter": {"tenant_id": t, "scope_prefix": f"tenant:{t}/workspace:eng"},
        "action": "RESET_SPENT",
        "amount": amt(600),
        "expected_count": 2,
        "idempotency_key": "rollover-1",
    }
    r = admin.post(url, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["total_matched"] == 2
    assert len(out["succeeded"]) == 2
    for scope in (f"tenant:{t}/workspace:eng", f"tenant:{t}/workspace:eng/agent:a"):
        b = admin.get("/v1/admin/budgets/lookup", params={"scope": scope, "unit": UNIT}).json()
        assert (b["allocated"], b["spent"], b["remaining"]) == (amt(600), amt(0), amt(600))
    root = admin.get("/v1/admin/budgets/lookup", params={"scope": f"tenant:{t}", "unit": UNIT})
    assert root.json()["allocated"] == amt(1000)  # outside the prefix: untouched
    assert admin.post(url, json=body).content == r.content  # replay, not re-applied

    # Per-row outcomes: DEBIT too large fails on one row, a unit mismatch fails another.
    debit = {
        "filter": {"tenant_id": t},
        "action": "DEBIT",
        "amount": amt(700),
        "idempotency_key": "debit-1",
    }
    out = admin.post(url, json=debit).json()
    assert out["total_matched"] == 4
    codes = sorted(x["error_code"] for x in out["failed"])
    assert codes == ["BUDGET_EXCEEDED", "BUDGET_EXCEEDED", "INVALID_TRANSITION"]
    assert len(out["succeeded"]) == 1  # the root: 1000 - 700
    repay = {**debit, "action": "REPAY_DEBT", "amount": amt(1), "idempotency_key": "repay-1"}
    out = admin.post(url, json={**repay, "filter": {"tenant_id": t, "unit": UNIT}}).json()
    assert len(out["skipped"]) == 3
    assert {x["reason"] for x in out["skipped"]} == {"ALREADY_IN_TARGET_STATE"}

    r = admin.post(url, json={**body, "expected_count": 5, "idempotency_key": "x"})
    assert r.status_code == 409
    assert r.json()["error"] == "COUNT_MISMATCH"
    r = admin.post(url, json={**body, "filter": {"tenant_id": tid()}, "idempotency_key": "y"})
    assert r.status_code == 404
    no_tenant = {**body, "filter": {"scope_prefix": "tenant:x"}, "idempotency_key": "z"}
    assert admin.post(url, json=no_tenant).status_code == 400


def test_overview_counts_tenants_budgets_and_debt(
    server: ServerHandle, admin: httpx.Client
) -> None:
    before = admin.get("/v1/admin/overview").json()
    t = tid()
    server.provision(t, {"": 100, "workspace:w": 50})
    # The largest debt a ledger can hold, so this scope tops the (10-row) debt lists even on
    # the shared test server.
    top = 2**63 - 1
    set_ledger(server, t, f"tenant:{t}/workspace:w", spent=50, debt=top, remaining=-top)
    admin.patch(
        "/v1/admin/budgets",
        params={"scope": f"tenant:{t}/workspace:w", "unit": UNIT},
        json={"overdraft_limit": amt(0)},
    )
    after = admin.get("/v1/admin/overview").json()
    assert after["tenant_counts"]["total"] == before["tenant_counts"]["total"] + 1
    assert after["budget_counts"]["total"] == before["budget_counts"]["total"] + 2
    assert after["budget_counts"]["with_debt"] == before["budget_counts"]["with_debt"] + 1
    assert (
        after["budget_counts"]["by_unit"][UNIT]
        == before["budget_counts"]["by_unit"].get(UNIT, 0) + 2
    )
    assert after["debt_scopes"][0] == {
        "scope": f"tenant:{t}/workspace:w",
        "unit": UNIT,
        "debt": top,
        "overdraft_limit": 0,
    }
    assert after["over_limit_scopes"][0]["scope"] == f"tenant:{t}/workspace:w"
    debts = [s["debt"] for s in after["debt_scopes"]]
    assert debts == sorted(debts, reverse=True)
    assert admin.get("/v1/admin/overview", headers={"X-Admin-API-Key": "x"}).status_code == 401
