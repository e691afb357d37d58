"""The embedded store: budgets and keys survive a restart on the same data dir."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runcycles_server_lite.testing import running_server

UNIT = "USD_MICROCENTS"


def test_state_survives_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)  # this test is about the embedded store
    data = tmp_path / "d"
    scope = "tenant:persist/workspace:w"
    with running_server(data) as srv, srv.admin_client() as admin:
        assert (
            admin.post("/v1/admin/tenants", json={"tenant_id": "persist", "name": "P"}).status_code
            == 201
        )
        secret = admin.post(
            "/v1/admin/api-keys", json={"tenant_id": "persist", "name": "k"}
        ).json()["key_secret"]
        body = {
            "tenant_id": "persist",
            "scope": scope,
            "unit": UNIT,
            "allocated": {"unit": UNIT, "amount": 2**62},
        }
        assert admin.post("/v1/admin/budgets", json=body).status_code == 201
        r = admin.post(
            "/v1/admin/budgets/fund",
            params={"tenant_id": "persist", "scope": scope, "unit": UNIT},
            json={
                "operation": "CREDIT",
                "amount": {"unit": UNIT, "amount": 12345},
                "idempotency_key": "once",
            },
        )
        assert r.status_code == 200
        first = r.content

    with running_server(data) as srv, srv.admin_client() as admin:
        r = admin.get("/v1/admin/budgets/lookup", params={"scope": scope, "unit": UNIT})
        assert r.status_code == 200
        assert r.json()["allocated"]["amount"] == 2**62 + 12345
        assert r.json()["remaining"]["amount"] == 2**62 + 12345
        # Keys and idempotency records persisted too.
        with httpx.Client(base_url=srv.base_url) as http:
            r = http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": secret})
            assert r.status_code == 200
        replay = admin.post(
            "/v1/admin/budgets/fund",
            params={"tenant_id": "persist", "scope": scope, "unit": UNIT},
            json={
                "operation": "CREDIT",
                "amount": {"unit": UNIT, "amount": 12345},
                "idempotency_key": "once",
            },
        )
        assert replay.content == first
