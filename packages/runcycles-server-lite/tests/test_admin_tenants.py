"""Admin plane: tenants (create idempotently, get, list with filters and paging, patch)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from runcycles_server_lite.testing import ServerHandle

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def tid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def test_create_tenant_201_then_same_payload_200(admin: httpx.Client) -> None:
    t = tid()
    body = {"tenant_id": t, "name": "Acme", "default_commit_overage_policy": "REJECT"}
    r = admin.post("/v1/admin/tenants", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["tenant_id"] == t
    assert created["status"] == "ACTIVE"
    assert created["default_commit_overage_policy"] == "REJECT"
    assert ISO.match(created["created_at"])
    again = admin.post("/v1/admin/tenants", json=body)
    assert again.status_code == 200
    assert again.json() == created


def test_create_tenant_with_different_payload_is_409(admin: httpx.Client) -> None:
    t = tid()
    assert admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "A"}).status_code == 201
    r = admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "B"})
    assert r.status_code == 409
    assert r.json()["error"] == "DUPLICATE_RESOURCE"


@pytest.mark.parametrize(
    "body",
    [
        {"tenant_id": "AB", "name": "x"},
        {"tenant_id": "Upper-Case", "name": "x"},
        {"name": "missing id"},
        {"tenant_id": "ok-tenant-x", "name": "x", "unknown": 1},
        {"tenant_id": "ok-tenant-x", "name": "x", "default_reservation_ttl_ms": 10},
        {"tenant_id": "ok-tenant-x", "name": "x", "default_commit_overage_policy": "MAYBE"},
        {
            "tenant_id": "ok-tenant-y",
            "name": "x",
            "default_reservation_ttl_ms": 120_000,
            "max_reservation_ttl_ms": 60_000,
        },
    ],
)
def test_create_tenant_rejects_invalid_payloads(
    admin: httpx.Client, body: dict[str, object]
) -> None:
    r = admin.post("/v1/admin/tenants", json=body)
    assert r.status_code == 400
    assert r.json()["error"] == "INVALID_REQUEST"


def test_tenant_endpoints_need_the_admin_key(server: ServerHandle, http: httpx.Client) -> None:
    body = {"tenant_id": tid(), "name": "x"}
    assert http.post("/v1/admin/tenants", json=body).status_code == 401
    bad = {"X-Admin-API-Key": "wrong"}
    r = http.post("/v1/admin/tenants", json=body, headers=bad)
    assert r.status_code == 401
    assert r.json()["error"] == "UNAUTHORIZED"
    # A tenant key is not an admin key.
    secret = server.provision(tid())
    r = http.get("/v1/admin/tenants", headers={"X-Cycles-API-Key": secret})
    assert r.status_code == 401


def test_interrupted_create_is_repaired_by_a_retry(
    server: ServerHandle, admin: httpx.Client
) -> None:
    from runcycles_server_lite.store import Store

    t = tid()
    body = {"tenant_id": t, "name": "N"}
    admin.post("/v1/admin/tenants", json=body)

    async def drop_index_entry(store: Store) -> None:
        await store.redis.zrem(store.keys.tenants(), t)

    server.run_store(drop_index_entry)
    assert admin.get("/v1/admin/tenants", params={"search": t}).json()["tenants"] == []
    assert admin.post("/v1/admin/tenants", json=body).status_code == 200
    listed = admin.get("/v1/admin/tenants", params={"search": t}).json()["tenants"]
    assert [x["tenant_id"] for x in listed] == [t]


def test_get_tenant_and_404(admin: httpx.Client) -> None:
    t = tid()
    admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "N", "metadata": {"a": "b"}})
    r = admin.get(f"/v1/admin/tenants/{t}")
    assert r.status_code == 200
    assert r.json()["metadata"] == {"a": "b"}
    r = admin.get(f"/v1/admin/tenants/{tid('missing')}")
    assert r.status_code == 404
    assert r.json()["error"] == "TENANT_NOT_FOUND"


def test_list_tenants_filters_and_pages(admin: httpx.Client) -> None:
    marker = uuid.uuid4().hex[:8]
    ids = [f"lst-{marker}-{i}" for i in range(5)]
    for i, t in enumerate(ids):
        admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": f"Name {i}"})
    admin.patch(f"/v1/admin/tenants/{ids[0]}", json={"status": "SUSPENDED"})

    seen: list[str] = []
    cursor = None
    while True:
        params = {"search": marker, "limit": 2, "sort_by": "tenant_id", "sort_dir": "asc"}
        if cursor:
            params["cursor"] = cursor
        r = admin.get("/v1/admin/tenants", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["tenants"]) <= 2
        seen += [t["tenant_id"] for t in page["tenants"]]
        if not page["has_more"]:
            assert "next_cursor" not in page
            break
        cursor = page["next_cursor"]
    assert seen == ids

    r = admin.get("/v1/admin/tenants", params={"search": marker, "status": "SUSPENDED"})
    assert [t["tenant_id"] for t in r.json()["tenants"]] == [ids[0]]
    # A cursor is bound to its filters.
    first = admin.get("/v1/admin/tenants", params={"search": marker, "limit": 1}).json()
    r = admin.get("/v1/admin/tenants", params={"cursor": first["next_cursor"], "limit": 1})
    assert r.status_code == 400
    for bad in ({"limit": 0}, {"limit": 101}, {"sort_by": "nope"}, {"search": "x" * 129}):
        assert admin.get("/v1/admin/tenants", params=bad).status_code == 400


def test_patch_tenant_status_machine(admin: httpx.Client) -> None:
    t = tid()
    admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": "N"})
    r = admin.patch(f"/v1/admin/tenants/{t}", json={"status": "SUSPENDED", "name": "M"})
    assert r.status_code == 200
    assert r.json()["status"] == "SUSPENDED"
    assert r.json()["name"] == "M"
    assert ISO.match(r.json()["suspended_at"])
    r = admin.patch(f"/v1/admin/tenants/{t}", json={"status": "ACTIVE"})
    assert r.json()["status"] == "ACTIVE"
    assert "suspended_at" not in r.json()
    r = admin.patch(f"/v1/admin/tenants/{t}", json={"max_reservation_extensions": 3})
    assert r.json()["max_reservation_extensions"] == 3
    r = admin.patch(f"/v1/admin/tenants/{t}", json={"default_reservation_ttl_ms": 7_200_000})
    assert r.status_code == 400  # above the tenant's max of 1 h
    r = admin.patch(
        f"/v1/admin/tenants/{t}",
        json={"default_reservation_ttl_ms": 7_200_000, "max_reservation_ttl_ms": 7_200_000},
    )
    assert r.json()["default_reservation_ttl_ms"] == 7_200_000
    r = admin.patch(f"/v1/admin/tenants/{t}", json={"status": "CLOSED"})
    assert r.status_code == 200
    assert r.json()["status"] == "CLOSED"
    assert ISO.match(r.json()["closed_at"])
    # CLOSED is terminal; re-closing is a no-op.
    r = admin.patch(f"/v1/admin/tenants/{t}", json={"status": "ACTIVE"})
    assert r.status_code == 409
    assert r.json()["error"] == "TENANT_CLOSED"
    assert admin.patch(f"/v1/admin/tenants/{t}", json={"name": "again"}).status_code == 409
    assert admin.patch(f"/v1/admin/tenants/{t}", json={"status": "CLOSED"}).status_code == 200
    assert admin.patch(f"/v1/admin/tenants/{tid()}", json={"name": "x"}).status_code == 404
    assert admin.patch(f"/v1/admin/tenants/{t}", json={"status": "GONE"}).status_code == 400


def test_closing_a_tenant_revokes_keys_and_closes_budgets(
    server: ServerHandle, admin: httpx.Client, http: httpx.Client
) -> None:
    t = tid()
    secret = server.provision(t, {"": 1000})
    assert http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": secret}).status_code == 200
    admin.patch(f"/v1/admin/tenants/{t}", json={"status": "CLOSED"})
    r = http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": secret})
    assert r.status_code == 401
    budgets = admin.get("/v1/admin/budgets", params={"tenant_id": t}).json()["ledgers"]
    assert [b["status"] for b in budgets] == ["CLOSED"]
    keys = admin.get("/v1/admin/api-keys", params={"tenant_id": t}).json()["keys"]
    assert {k["status"] for k in keys} == {"REVOKED"}
    # Mutations of a closed tenant's objects answer TENANT_CLOSED.
    r = admin.post("/v1/admin/api-keys", json={"tenant_id": t, "name": "late"})
    assert r.status_code == 409
    assert r.json()["error"] == "TENANT_CLOSED"
    r = admin.post(
        "/v1/admin/budgets/fund",
        params={"tenant_id": t, "scope": f"tenant:{t}", "unit": "USD_MICROCENTS"},
        json={"operation": "CREDIT", "amount": {"unit": "USD_MICROCENTS", "amount": 1}},
    )
    assert r.status_code == 409
    assert r.json()["error"] == "TENANT_CLOSED"


def test_bulk_action_tenants(server: ServerHandle, admin: httpx.Client, http: httpx.Client) -> None:
    marker = uuid.uuid4().hex[:8]
    ids = [f"bulk-{marker}-{i}" for i in range(4)]
    secrets = [server.provision(t, {"": 10}) for t in ids]
    admin.patch(f"/v1/admin/tenants/{ids[3]}", json={"status": "SUSPENDED"})
    url = "/v1/admin/tenants/bulk-action"
    body = {
        "filter": {"search": marker},
        "action": "SUSPEND",
        "expected_count": 4,
        "idempotency_key": f"k-{marker}",
    }
    # The count gate refuses a drifted preview without writing anything.
    r = admin.post(url, json={**body, "expected_count": 3, "idempotency_key": f"x-{marker}"})
    assert r.status_code == 409
    assert r.json()["error"] == "COUNT_MISMATCH"
    assert admin.get(f"/v1/admin/tenants/{ids[0]}").json()["status"] == "ACTIVE"

    r = admin.post(url, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["total_matched"] == 4
    assert sorted(x["id"] for x in out["succeeded"]) == ids[:3]
    assert out["skipped"] == [{"id": ids[3], "reason": "ALREADY_IN_TARGET_STATE"}]
    assert out["failed"] == []
    assert (
        http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": secrets[0]}).status_code == 401
    )
    # Same key, same request: the original response, nothing re-applied.
    again = admin.post(url, json=body)
    assert again.content == r.content
    assert admin.post(url, json={**body, "action": "CLOSE"}).status_code == 409

    close = {"filter": {"search": marker, "status": "SUSPENDED"}, "action": "CLOSE"}
    r = admin.post(url, json={**close, "idempotency_key": f"c-{marker}"})
    assert sorted(x["id"] for x in r.json()["succeeded"]) == ids
    budgets = admin.get("/v1/admin/budgets", params={"tenant_id": ids[0]}).json()["ledgers"]
    assert budgets[0]["status"] == "CLOSED"
    react = {"filter": {"search": marker}, "action": "REACTIVATE", "idempotency_key": f"r-{marker}"}
    r = admin.post(url, json=react)
    assert {x["error_code"] for x in r.json()["failed"]} == {"INVALID_TRANSITION"}
    assert len(r.json()["failed"]) == 4

    assert admin.post(url, json={**body, "filter": {}}).status_code == 400
    assert (
        admin.post(url, json={"filter": {"search": marker}, "action": "SUSPEND"}).status_code == 400
    )
    assert http.post(url, json=body).status_code == 401
