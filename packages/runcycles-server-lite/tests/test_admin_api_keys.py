"""Admin plane: API keys (create with a one-time secret, list, patch, revoke)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from runcycles_server_lite.testing import ServerHandle

SPEC_DEFAULT_PERMISSIONS = {
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "budgets:read",
    "budgets:write",
    "policies:read",
    "policies:write",
}


def tid() -> str:
    return f"k-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def _tenant(admin: httpx.Client) -> str:
    t = tid()
    assert admin.post("/v1/admin/tenants", json={"tenant_id": t, "name": t}).status_code == 201
    return t


def test_create_key_returns_secret_once_with_default_permissions(
    admin: httpx.Client, http: httpx.Client
) -> None:
    t = _tenant(admin)
    r = admin.post("/v1/admin/api-keys", json={"tenant_id": t, "name": "agent"})
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["key_secret"].startswith("cyc_live_")
    assert key["key_secret"].startswith(key["key_prefix"])
    assert set(key["permissions"]) == SPEC_DEFAULT_PERMISSIONS
    assert key["tenant_id"] == t
    assert key["expires_at"] > key["created_at"]
    # The secret works, and is never shown again.
    r = http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": key["key_secret"]})
    assert r.status_code == 200
    listed = admin.get("/v1/admin/api-keys", params={"tenant_id": t}).json()["keys"]
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert "key_secret" not in listed[0]
    assert "key_hash" not in listed[0]
    assert listed[0]["status"] == "ACTIVE"


def test_create_key_errors(admin: httpx.Client) -> None:
    t = _tenant(admin)
    r = admin.post("/v1/admin/api-keys", json={"tenant_id": tid(), "name": "x"})
    assert r.status_code == 400
    assert r.json()["error"] == "TENANT_NOT_FOUND"
    r = admin.post(
        "/v1/admin/api-keys", json={"tenant_id": t, "name": "x", "permissions": ["root"]}
    )
    assert r.status_code == 400
    r = admin.post(
        "/v1/admin/api-keys",
        json={"tenant_id": t, "name": "x", "expires_at": "2001-01-01T00:00:00Z"},
    )
    assert r.status_code == 400


def test_explicit_empty_permissions_grant_nothing(admin: httpx.Client, http: httpx.Client) -> None:
    t = _tenant(admin)
    r = admin.post("/v1/admin/api-keys", json={"tenant_id": t, "name": "x", "permissions": []})
    assert r.json()["permissions"] == []
    r = http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": r.json()["key_secret"]})
    assert r.status_code == 403


def test_list_keys_filters_and_spans_tenants(admin: httpx.Client) -> None:
    t1, t2 = _tenant(admin), _tenant(admin)
    k1 = admin.post("/v1/admin/api-keys", json={"tenant_id": t1, "name": "one"}).json()
    k2 = admin.post("/v1/admin/api-keys", json={"tenant_id": t2, "name": "two"}).json()
    admin.delete(f"/v1/admin/api-keys/{k2['key_id']}")
    everything = admin.get("/v1/admin/api-keys", params={"limit": 100}).json()
    ids: list[str] = []
    page = everything
    while True:
        ids += [k["key_id"] for k in page["keys"]]
        if not page["has_more"]:
            break
        page = admin.get(
            "/v1/admin/api-keys", params={"limit": 100, "cursor": page["next_cursor"]}
        ).json()
    assert {k1["key_id"], k2["key_id"]} <= set(ids)
    revoked = admin.get("/v1/admin/api-keys", params={"tenant_id": t2, "status": "REVOKED"})
    assert [k["key_id"] for k in revoked.json()["keys"]] == [k2["key_id"]]
    active = admin.get("/v1/admin/api-keys", params={"tenant_id": t2, "status": "ACTIVE"})
    assert active.json()["keys"] == []


def test_revoke_takes_effect_at_once(admin: httpx.Client, http: httpx.Client) -> None:
    t = _tenant(admin)
    key = admin.post("/v1/admin/api-keys", json={"tenant_id": t, "name": "x"}).json()
    headers = {"X-Cycles-API-Key": key["key_secret"]}
    assert http.get("/v1/admin/budgets", headers=headers).status_code == 200  # now cached
    r = admin.delete(f"/v1/admin/api-keys/{key['key_id']}", params={"reason": "leaked"})
    assert r.status_code == 200
    assert r.json()["status"] == "REVOKED"
    assert r.json()["revoked_reason"] == "leaked"
    r = http.get("/v1/admin/budgets", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "UNAUTHORIZED"
    again = admin.delete(f"/v1/admin/api-keys/{key['key_id']}")
    assert again.status_code == 409
    assert admin.delete("/v1/admin/api-keys/key_nope").status_code == 404


def test_patch_key_permissions_apply_at_once(admin: httpx.Client, http: httpx.Client) -> None:
    t = _tenant(admin)
    key = admin.post("/v1/admin/api-keys", json={"tenant_id": t, "name": "x"}).json()
    headers = {"X-Cycles-API-Key": key["key_secret"]}
    assert http.get("/v1/admin/budgets", headers=headers).status_code == 200
    r = admin.patch(
        f"/v1/admin/api-keys/{key['key_id']}",
        json={"permissions": ["balances:read"], "name": "narrow"},
    )
    assert r.status_code == 200
    assert r.json()["permissions"] == ["balances:read"]
    assert r.json()["name"] == "narrow"
    r = http.get("/v1/admin/budgets", headers=headers)
    assert r.status_code == 403
    assert r.json()["error"] == "FORBIDDEN"
    assert admin.patch("/v1/admin/api-keys/key_nope", json={"name": "x"}).status_code == 404
    bad = admin.patch(f"/v1/admin/api-keys/{key['key_id']}", json={"tenant_id": "other"})
    assert bad.status_code == 400
    admin.delete(f"/v1/admin/api-keys/{key['key_id']}")
    r = admin.patch(f"/v1/admin/api-keys/{key['key_id']}", json={"name": "y"})
    assert r.status_code == 409


def test_key_endpoints_need_the_admin_key(server: ServerHandle, http: httpx.Client) -> None:
    secret = server.provision(tid())
    headers = {"X-Cycles-API-Key": secret}
    assert http.get("/v1/admin/api-keys", headers=headers).status_code == 401
    r = http.post("/v1/admin/api-keys", json={"tenant_id": "x", "name": "y"}, headers=headers)
    assert r.status_code == 401
