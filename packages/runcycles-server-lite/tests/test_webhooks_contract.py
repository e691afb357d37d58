"""Every events and webhooks response body (both planes) checked against the server's own
contract (``GET /openapi.json``), each status one the contract documents for its operation;
the conformance session checks the same routes against the upstream spec."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from contract_support import conforms, operation, response_schema
from runtime_support import ACTION, amount
from webhook_support import LOOPBACK_OK, receiver

from runcycles_server_lite.auth import DEFAULT_PERMISSIONS
from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle, running_server
from runcycles_server_lite.webhooks.dispatcher import Dispatcher

PERMISSIONS = [*DEFAULT_PERMISSIONS, "webhooks:read", "webhooks:write", "events:read"]
AW, ASUB = "/v1/admin/webhooks", "/v1/admin/webhooks/{subscription_id}"
TW, TSUB = "/v1/webhooks", "/v1/webhooks/{subscription_id}"
SEC = "/v1/admin/config/webhook-security"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with running_server(tmp_path_factory.mktemp("hook-shapes"), webhook_interval_s=0) as s:
        yield s


def check(r: httpx.Response, method: str, path: str, status: int) -> Any:
    """``r`` has ``status``, documented for ``method path``, and its body that schema."""
    name = response_schema(method, path, status)
    if name is None:
        assert str(status) in operation(method, path)["responses"], (method, path, status)
        assert r.status_code == status, r.text
        assert r.content == b""
        return None
    return conforms(r, name, status)


def _tick(srv: ServerHandle) -> None:
    async def go(store: Store) -> bool:
        d = Dispatcher(store, srv.settings)
        try:
            return await d.tick()
        finally:
            await d.stop()

    srv.run_store(go)


def test_webhook_and_event_responses_match_the_contract(srv: ServerHandle) -> None:
    t = f"whc-{uuid.uuid4().hex[:10]}"
    secret = srv.provision(t, {"": 10}, permissions=PERMISSIONS)
    with (
        srv.admin_client() as admin,
        httpx.Client(
            base_url=srv.base_url, headers={"X-Cycles-API-Key": secret}, timeout=30
        ) as http,
        receiver() as rx,
    ):
        check(admin.put(SEC, json=LOOPBACK_OK), "put", SEC, 200)
        check(admin.get(SEC), "get", SEC, 200)
        check(admin.put(SEC, json={"blocked_cidr_ranges": ["nope"]}), "put", SEC, 400)

        full = {
            "url": rx.url,
            "name": "shapes",
            "event_types": ["reservation.denied", "budget.funded"],
            "thresholds": {"budget_utilization": [0.5, 1], "burn_rate_multiplier": 2},
            "retry_policy": {"max_retries": 1, "initial_delay_ms": 100, "max_delay_ms": 1000},
            "headers": {"X-Team": "a"},
            "metadata": {"k": "v"},
        }
        created = check(http.post(TW, json=full), "post", TW, 201)
        sid = created["subscription"]["subscription_id"]
        tsub, asub = f"{TW}/{sid}", f"{AW}/{sid}"
        check(http.post(TW, json={"url": rx.url, "event_types": []}), "post", TW, 400)
        check(http.get(TW), "get", TW, 200)
        check(admin.get(TW, params={"tenant": t}), "get", TW, 200)
        check(http.get(tsub), "get", TSUB, 200)
        check(http.get(f"{TW}/whsub_nope"), "get", TSUB, 404)
        check(http.patch(tsub, json={"status": "PAUSED"}), "patch", TSUB, 200)
        check(http.patch(tsub, json={"status": "ACTIVE"}), "patch", TSUB, 200)
        check(http.post(f"{tsub}/test"), "post", TSUB + "/test", 200)

        admin_made = check(
            admin.post(
                AW, params={"tenant_id": t}, json={"url": rx.url, "event_types": ["budget.funded"]}
            ),
            "post",
            AW,
            201,
        )
        other = admin_made["subscription"]["subscription_id"]
        check(admin.get(AW, params={"tenant_id": t}), "get", AW, 200)
        check(admin.get(asub), "get", ASUB, 200)
        check(admin.get(f"{AW}/whsub_nope"), "get", ASUB, 404)
        check(admin.patch(asub, json={"name": "renamed"}), "patch", ASUB, 200)
        check(admin.post(f"{AW}/{other}/test"), "post", ASUB + "/test", 200)

        denied = http.post(
            "/v1/reservations",
            json={
                "idempotency_key": uuid.uuid4().hex,
                "subject": {"tenant": t},
                "action": ACTION,
                "estimate": amount(50),
            },
        )
        assert denied.status_code == 409, denied.text
        deadline = time.monotonic() + 15
        while not rx.events("reservation.denied"):
            assert time.monotonic() < deadline, "the denial was not delivered"
            _tick(srv)
            time.sleep(0.05)
        check(admin.post(f"{asub}/replay", json={"max_events": 10}), "post", ASUB + "/replay", 202)
        check(admin.post(f"{asub}/replay", json={"max_events": 0}), "post", ASUB + "/replay", 400)
        _tick(srv)
        rows = check(http.get(f"{tsub}/deliveries"), "get", TSUB + "/deliveries", 200)
        assert rows["deliveries"], rows
        check(admin.get(f"{asub}/deliveries"), "get", ASUB + "/deliveries", 200)
        bad = admin.get(f"{asub}/deliveries", params={"status": "NOPE"})
        check(bad, "get", ASUB + "/deliveries", 400)

        listed = check(http.get("/v1/events"), "get", "/v1/events", 200)
        assert listed["events"], listed
        every = check(
            admin.get("/v1/admin/events", params={"tenant_id": t}), "get", "/v1/admin/events", 200
        )
        assert len(every["events"]) >= len(listed["events"])
        check(admin.get("/v1/admin/events", params={"limit": 0}), "get", "/v1/admin/events", 400)
        one = every["events"][0]["event_id"]
        event_path = "/v1/admin/events/{event_id}"
        check(admin.get(f"/v1/admin/events/{one}"), "get", event_path, 200)
        check(admin.get("/v1/admin/events/evt_nope"), "get", event_path, 404)

        check(http.delete(tsub), "delete", TSUB, 204)
        check(http.delete(tsub), "delete", TSUB, 404)
        check(admin.delete(f"{AW}/{other}"), "delete", ASUB, 204)
        check(httpx.get(f"{srv.base_url}{TW}", timeout=10), "get", TW, 401)


def test_windows_before_the_epoch_and_oversized_ids_are_not_server_errors(
    srv: ServerHandle,
) -> None:
    """Redis rejects negative or beyond-u64 stream ids; such input is answered as an empty
    window, a 404 or a clear 400, never a 500 (schemathesis found all three)."""
    import base64

    import orjson

    t = f"whe-{uuid.uuid4().hex[:10]}"
    secret = srv.provision(t, {"": 10}, permissions=PERMISSIONS)
    ancient = {"from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z"}
    with (
        srv.admin_client() as admin,
        httpx.Client(
            base_url=srv.base_url, headers={"X-Cycles-API-Key": secret}, timeout=30
        ) as http,
    ):
        r = check(admin.get("/v1/admin/events", params=ancient), "get", "/v1/admin/events", 200)
        assert r["events"] == []
        open_start = {"from": "0001-01-01T00:00:00Z"}
        r = check(http.get("/v1/events", params=open_start), "get", "/v1/events", 200)
        assert r["events"], "a window opening before the epoch still holds today's events"
        huge = f"evt_{t}_99999999999999999999-0"
        check(admin.get(f"/v1/admin/events/{huge}"), "get", "/v1/admin/events/{event_id}", 404)
        page = http.get("/v1/events", params={"limit": 1}).json()
        assert page["has_more"] and page["next_cursor"], page
        cur = orjson.loads(base64.urlsafe_b64decode(page["next_cursor"] + "=="))
        forged = {**cur, "s": "99999999999999999999-0"}
        token = base64.urlsafe_b64encode(orjson.dumps(forged)).decode().rstrip("=")
        bad = check(http.get("/v1/events", params={"cursor": token}), "get", "/v1/events", 400)
        assert bad["error"] == "INVALID_REQUEST"

        with receiver() as rx:
            made = http.post(TW, json={"url": rx.url, "event_types": ["budget.funded"]})
            sid = check(made, "post", TW, 201)["subscription"]["subscription_id"]
            replayed = admin.post(f"{AW}/{sid}/replay", json=ancient)
            assert check(replayed, "post", ASUB + "/replay", 202)["events_queued"] == 0
