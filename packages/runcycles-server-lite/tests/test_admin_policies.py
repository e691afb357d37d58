"""Admin plane: policies (stored and listed like the reference's; not enforced)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from runcycles_server_lite.testing import ServerHandle


def tid() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def test_tenant_key_creates_lists_and_updates_its_policies(
    server: ServerHandle, http: httpx.Client, admin: httpx.Client
) -> None:
    t = tid()
    headers = {"X-Cycles-API-Key": server.provision(t)}  # policies:* are default permissions
    body = {
        "name": "eng default",
        "scope_pattern": f"tenant:{t}/workspace:eng/*",
        "priority": 10,
        "caps": {"max_tokens": 4096, "tool_denylist": ["shell"]},
        "rate_limits": {"max_reservations_per_minute": 60},
        "effective_from": "2026-01-01T00:00:00Z",
    }
    r = http.post("/v1/admin/policies", json=body, headers=headers)
    assert r.status_code == 201, r.text
    pol = r.json()
    assert pol["policy_id"].startswith("pol_")
    assert pol["status"] == "ACTIVE"
    assert pol["caps"] == {"max_tokens": 4096, "tool_denylist": ["shell"]}
    assert "tenant_id" not in pol
    low = http.post(
        "/v1/admin/policies",
        json={"name": "low", "scope_pattern": f"tenant:{t}"},
        headers=headers,
    ).json()
    assert low["priority"] == 0
    r = http.post("/v1/admin/policies", json={**body, "priority": 1}, headers=headers)
    assert r.status_code == 409
    assert r.json()["error"] == "DUPLICATE_RESOURCE"

    listed = http.get("/v1/admin/policies", headers=headers).json()["policies"]
    assert [p["name"] for p in listed] == ["eng default", "low"]  # highest priority first
    r = http.patch(
        f"/v1/admin/policies/{low['policy_id']}",
        json={"status": "DISABLED", "name": "renamed"},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "DISABLED"
    assert r.json()["created_at"] == low["created_at"]
    # The old name is free again, the new one is taken.
    ok = http.post("/v1/admin/policies", json={**body, "name": "low"}, headers=headers)
    assert ok.status_code == 201
    taken = http.patch(
        f"/v1/admin/policies/{ok.json()['policy_id']}", json={"name": "renamed"}, headers=headers
    )
    assert taken.status_code == 409
    r = http.get("/v1/admin/policies", params={"status": "DISABLED"}, headers=headers)
    assert [p["name"] for p in r.json()["policies"]] == ["renamed"]
    # The admin key lists with an explicit tenant.
    r = admin.get("/v1/admin/policies", params={"tenant_id": t})
    assert len(r.json()["policies"]) == 3
    assert admin.get("/v1/admin/policies").status_code == 400


def test_policy_auth_and_validation(
    server: ServerHandle, http: httpx.Client, admin: httpx.Client
) -> None:
    t, other = tid(), tid()
    mine = {"X-Cycles-API-Key": server.provision(t)}
    theirs = {"X-Cycles-API-Key": server.provision(other)}
    reader = {"X-Cycles-API-Key": server.provision(t, permissions=["policies:read"])}
    body = {"name": "n", "scope_pattern": f"tenant:{t}"}
    assert http.post("/v1/admin/policies", json=body, headers=reader).status_code == 403
    assert http.post("/v1/admin/policies", json=body).status_code == 401
    r = http.post("/v1/admin/policies", json={**body, "tenant_id": t}, headers=mine)
    assert r.status_code == 400
    for bad in (
        {"scope_pattern": "x"},
        {**body, "priority": -1},
        {**body, "caps": {"max_tokens": -5}},
        {**body, "unknown": True},
        {
            **body,
            "effective_from": "2026-02-01T00:00:00Z",
            "effective_until": "2026-01-01T00:00:00Z",
        },
    ):
        assert http.post("/v1/admin/policies", json=bad, headers=mine).status_code == 400
    pol = admin.post("/v1/admin/policies", json={**body, "tenant_id": t}).json()
    assert admin.post("/v1/admin/policies", json=body).status_code == 400
    # Another tenant can neither see nor change it.
    r = http.patch(f"/v1/admin/policies/{pol['policy_id']}", json={"priority": 3}, headers=theirs)
    assert r.status_code == 404
    assert http.get("/v1/admin/policies", headers=theirs).json()["policies"] == []
    r = admin.patch(f"/v1/admin/policies/{pol['policy_id']}", json={"priority": 3})
    assert r.json()["priority"] == 3
    assert admin.patch("/v1/admin/policies/pol_nope", json={"priority": 1}).status_code == 404
    admin.patch(f"/v1/admin/tenants/{t}", json={"status": "CLOSED"})
    r = admin.patch(f"/v1/admin/policies/{pol['policy_id']}", json={"priority": 4})
    assert r.status_code == 409
    assert r.json()["error"] == "TENANT_CLOSED"
