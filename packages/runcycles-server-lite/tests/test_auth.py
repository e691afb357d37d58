"""Authentication and authorisation on the admin plane, and what tenant keys may reach."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle

UNIT = "USD_MICROCENTS"


def tid() -> str:
    return f"a-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def _get(http: httpx.Client, secret: str | None) -> httpx.Response:
    headers = {"X-Cycles-API-Key": secret} if secret is not None else {}
    return http.get("/v1/admin/budgets", headers=headers)


def test_missing_and_unknown_keys_are_401(http: httpx.Client) -> None:
    for secret in (None, "", "cyc_live_not-a-real-key"):
        r = _get(http, secret)
        assert r.status_code == 401
        body = r.json()
        assert body["error"] == "UNAUTHORIZED"
        assert body["request_id"] == r.headers["x-request-id"]


def test_expired_key_is_401(server: ServerHandle, http: httpx.Client) -> None:
    t = tid()
    server.provision(t)

    async def expired(store: Store) -> str:
        now = await store.time_ms()
        return (await prov.create_api_key(store, t, "old", expires_at_ms=now - 1)).secret

    secret = server.run_store(expired)
    r = _get(http, secret)
    assert r.status_code == 401
    assert "expired" in r.json()["message"]
    with server.admin_client() as admin:
        keys = admin.get("/v1/admin/api-keys", params={"tenant_id": t}).json()["keys"]
    assert "EXPIRED" in {k["status"] for k in keys}


def test_suspended_tenant_is_401_and_reactivation_restores(
    server: ServerHandle, admin: httpx.Client, http: httpx.Client
) -> None:
    t = tid()
    secret = server.provision(t, {"": 100})
    assert _get(http, secret).status_code == 200
    admin.patch(f"/v1/admin/tenants/{t}", json={"status": "SUSPENDED"})
    r = _get(http, secret)
    assert r.status_code == 401
    assert "suspended" in r.json()["message"]
    admin.patch(f"/v1/admin/tenants/{t}", json={"status": "ACTIVE"})
    assert _get(http, secret).status_code == 200


def test_wrong_admin_key_is_401_without_falling_back_to_tenant_key(
    server: ServerHandle, http: httpx.Client
) -> None:
    secret = server.provision(tid())
    headers = {"X-Admin-API-Key": "nope", "X-Cycles-API-Key": secret}
    r = http.get("/v1/admin/budgets", headers=headers)
    assert r.status_code == 401
    assert http.get("/v1/admin/tenants", headers={"X-Admin-API-Key": ""}).status_code == 401


def test_missing_permission_is_403(server: ServerHandle, http: httpx.Client) -> None:
    t = tid()
    read_only = server.provision(t, {"": 100}, permissions=["budgets:read"])
    headers = {"X-Cycles-API-Key": read_only}
    assert http.get("/v1/admin/budgets", headers=headers).status_code == 200
    r = http.post(
        "/v1/admin/budgets/fund",
        params={"scope": f"tenant:{t}", "unit": UNIT},
        json={"operation": "CREDIT", "amount": {"unit": UNIT, "amount": 1}},
        headers=headers,
    )
    assert r.status_code == 403
    assert r.json()["error"] == "FORBIDDEN"
    runtime_only = server.provision(t, permissions=["reservations:create"])
    r = http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": runtime_only})
    assert r.status_code == 403


def test_admin_write_wildcard_satisfies_budget_writes(
    server: ServerHandle, http: httpx.Client
) -> None:
    t = tid()
    secret = server.provision(t, {"": 100}, permissions=["admin:write"])
    r = http.post(
        "/v1/admin/budgets/fund",
        params={"scope": f"tenant:{t}", "unit": UNIT},
        json={"operation": "CREDIT", "amount": {"unit": UNIT, "amount": 5}},
        headers={"X-Cycles-API-Key": secret},
    )
    assert r.status_code == 200, r.text
    # admin:read satisfies reads, never writes.
    reader = server.provision(t, permissions=["admin:read"])
    assert _get(http, reader).status_code == 200
    r = http.post(
        "/v1/admin/budgets/fund",
        params={"scope": f"tenant:{t}", "unit": UNIT},
        json={"operation": "CREDIT", "amount": {"unit": UNIT, "amount": 5}},
        headers={"X-Cycles-API-Key": reader},
    )
    assert r.status_code == 403


def test_tenant_key_cannot_reach_another_tenants_budgets(
    server: ServerHandle, http: httpx.Client
) -> None:
    mine, theirs = tid(), tid()
    secret = server.provision(mine, {"": 100})
    server.provision(theirs, {"": 100})
    headers = {"X-Cycles-API-Key": secret}
    other = f"tenant:{theirs}"
    r = http.get("/v1/admin/budgets/lookup", params={"scope": other, "unit": UNIT}, headers=headers)
    assert r.status_code == 403
    r = http.post(
        "/v1/admin/budgets/fund",
        params={"scope": other, "unit": UNIT, "tenant_id": theirs},
        json={"operation": "CREDIT", "amount": {"unit": UNIT, "amount": 1}},
        headers=headers,
    )
    assert r.status_code == 403
    r = http.post(
        "/v1/admin/budgets",
        json={
            "scope": f"{other}/workspace:x",
            "unit": UNIT,
            "allocated": {"unit": UNIT, "amount": 1},
        },
        headers=headers,
    )
    assert r.status_code == 403
    # tenant_id is ignored on the list for tenant keys: only my own budgets come back.
    r = http.get("/v1/admin/budgets", params={"tenant_id": theirs}, headers=headers)
    assert [b["tenant_id"] for b in r.json()["ledgers"]] == [mine]


def test_introspect_and_validate(
    server: ServerHandle, admin: httpx.Client, http: httpx.Client
) -> None:
    t = tid()
    secret = server.provision(t, permissions=["budgets:read", "admin:write"])
    r = admin.get("/v1/auth/introspect")
    assert r.status_code == 200
    assert r.json()["auth_type"] == "admin"
    assert r.json()["permissions"] == ["*"]
    assert "tenant_id" not in r.json()
    r = http.get("/v1/auth/introspect", headers={"X-Cycles-API-Key": secret})
    body = r.json()
    assert body["auth_type"] == "tenant"
    assert body["tenant_id"] == t
    caps = body["capabilities"]
    assert caps["view_budgets"]
    assert caps["manage_budgets"]
    assert not caps["view_tenants"]
    assert not caps["manage_api_keys"]
    assert http.get("/v1/auth/introspect").status_code == 401
    r = admin.post("/v1/auth/validate", json={"key_secret": secret})
    assert r.json()["valid"] is True
    assert r.json()["tenant_id"] == t
    r = admin.post("/v1/auth/validate", json={"key_secret": "cyc_live_bogus"})
    assert r.json()["valid"] is False
    assert http.post("/v1/auth/validate", json={"key_secret": secret}).status_code == 401


def test_store_down_is_503_on_both_planes(tmp_path_factory: pytest.TempPathFactory) -> None:
    from runcycles_server_lite.testing import running_server

    with running_server(tmp_path_factory.mktemp("down")) as srv:
        secret = srv.provision("down-tenant", {"": 100})
        with httpx.Client(base_url=srv.base_url, timeout=10) as http:
            assert _get(http, secret).status_code == 200
            # Stop the store under the running server.
            srv.run_store(lambda s: s.redis.shutdown(nosave=True))
            srv.settings.auth_cache_ttl_s = 0
            cases = [
                http.get("/v1/admin/tenants", headers=srv.admin_headers),
                http.post(
                    "/v1/admin/budgets/fund",
                    params={
                        "tenant_id": "down-tenant",
                        "scope": "tenant:down-tenant",
                        "unit": UNIT,
                    },
                    json={"operation": "CREDIT", "amount": {"unit": UNIT, "amount": 1}},
                    headers=srv.admin_headers,
                ),
                # A tenant key whose resolution is not cached must not turn into a 401.
                _get(http, "cyc_live_uncached-secret"),
                http.post("/v1/reservations", json={}, headers={"X-Cycles-API-Key": "cyc_live_x"}),
            ]
            for r in cases:
                assert r.status_code == 503, (r.request.url, r.text)
                assert r.headers.get("retry-after") == "1"
            # /metrics still answers, says the store is down and counts the failures.
            scraped = http.get("/metrics")
            assert scraped.status_code == 200
            assert "cycles_store_up 0.0" in scraped.text
            assert "cycles_scopes_over_limit" not in scraped.text
            errors = [
                ln for ln in scraped.text.splitlines() if ln.startswith("cycles_store_errors_total")
            ]
            assert errors and float(errors[0].split()[-1]) >= len(cases)
