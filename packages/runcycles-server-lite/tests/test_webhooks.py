"""Webhook subscriptions on both planes, the two invariants, the SSRF guard, and delivery to
real loopback receivers (one that succeeds, one that fails, one that is slow, one that is
down), driven by the real dispatcher."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runtime_support import ACTION, amount
from webhook_support import LOOPBACK_OK, admin, closed_port_url, receiver, srv

from runcycles_server_lite.auth import DEFAULT_PERMISSIONS
from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle, running_server
from runcycles_server_lite.webhooks.dispatcher import Dispatcher

__all__ = ["admin", "srv"]  # fixtures

UNIT = "USD_MICROCENTS"
HOOKS = [*DEFAULT_PERMISSIONS, "webhooks:read", "webhooks:write", "events:read"]
FAST_RETRY = {"max_retries": 1, "initial_delay_ms": 100, "max_delay_ms": 1000}


class T:
    def __init__(self, srv: ServerHandle, budgets: dict[str, int], **kw: Any) -> None:
        self.name = f"wh-{uuid.uuid4().hex[:10]}"
        self.secret = srv.provision(self.name, budgets, permissions=HOOKS, **kw)
        self.http = httpx.Client(
            base_url=srv.base_url, headers={"X-Cycles-API-Key": self.secret}, timeout=30
        )

    def reserve(self, n: int) -> httpx.Response:
        return self.http.post(
            "/v1/reservations",
            json={
                "idempotency_key": uuid.uuid4().hex,
                "subject": {"tenant": self.name},
                "action": ACTION,
                "estimate": amount(n),
            },
        )

    def hook(self, url: str, **body: Any) -> dict[str, Any]:
        payload = {"url": url, "event_types": ["reservation.denied", "budget.funded"], **body}
        r = self.http.post("/v1/webhooks", json=payload)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out


@pytest.fixture
def tenant(srv: ServerHandle) -> Iterator[Callable[..., T]]:
    made: list[T] = []

    def make(budgets: dict[str, int] | None = None, **kw: Any) -> T:
        made.append(T(srv, budgets or {"": 100}, **kw))
        return made[-1]

    yield make
    for t in made:
        t.http.close()


def tick(srv: ServerHandle) -> bool:
    async def go(store: Store) -> bool:
        d = Dispatcher(store, srv.settings)
        try:
            return await d.tick()
        finally:
            await d.stop()

    return srv.run_store(go)


def until(srv: ServerHandle, done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "dispatcher did not get there in time"
        tick(srv)
        time.sleep(0.05)


def deliveries(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["deliveries"]
    return rows


# -- CRUD and invariants ----------------------------------------------------------------------


def test_tenant_crud_secret_once_and_isolation(srv: ServerHandle, tenant: Callable[..., T]) -> None:
    a, b = tenant(), tenant()
    created = a.hook("http://127.0.0.1:9/x", headers={"Authorization": "Bearer s3cret"})
    sub = created["subscription"]
    sid = sub["subscription_id"]
    assert sid.startswith("whsub_")
    assert created["signing_secret"].startswith("whsec_")
    assert sub["tenant_id"] == a.name and sub["status"] == "ACTIVE"
    assert "signing_secret" not in sub
    got = a.http.get(f"/v1/webhooks/{sid}").json()
    assert got["headers"] == {"Authorization": "********"}
    assert created["signing_secret"] not in str(got)
    assert [s["subscription_id"] for s in a.http.get("/v1/webhooks").json()["subscriptions"]] == [
        sid
    ]
    assert b.http.get("/v1/webhooks").json()["subscriptions"] == []
    for r in (
        b.http.get(f"/v1/webhooks/{sid}"),
        b.http.patch(f"/v1/webhooks/{sid}", json={"name": "x"}),
        b.http.delete(f"/v1/webhooks/{sid}"),
        b.http.get(f"/v1/webhooks/{sid}/deliveries"),
    ):
        assert r.status_code == 404, r.text
    r = a.http.patch(f"/v1/webhooks/{sid}", json={"status": "PAUSED", "name": "n"})
    assert r.status_code == 200 and r.json()["status"] == "PAUSED"
    with srv.admin_client() as c:
        assert c.get("/v1/webhooks").status_code == 400  # admin must name the tenant
        listed = c.get("/v1/webhooks", params={"tenant": a.name}).json()["subscriptions"]
        assert [s["name"] for s in listed] == ["n"]
        assert c.get(f"/v1/admin/webhooks/{sid}").json()["status"] == "PAUSED"
        evs = c.get("/v1/admin/events", params={"tenant_id": a.name, "category": "webhook"})
        kinds = [e["event_type"] for e in evs.json()["events"]]
        assert kinds == ["webhook.paused", "webhook.created"]
        paused = evs.json()["events"][0]["data"]
        assert paused["changed_fields"] == ["name"]
        assert (paused["previous_status"], paused["new_status"]) == ("ACTIVE", "PAUSED")
    assert a.http.delete(f"/v1/webhooks/{sid}").status_code == 204
    gone = a.http.get(f"/v1/webhooks/{sid}")
    assert gone.status_code == 404
    assert gone.json()["error"] == "WEBHOOK_NOT_FOUND"


def test_permissions(srv: ServerHandle) -> None:
    name = f"wh-{uuid.uuid4().hex[:10]}"
    secret = srv.provision(name, {"": 10})  # default permissions: no webhooks:*
    r = httpx.post(
        f"{srv.base_url}/v1/webhooks",
        json={"url": "http://127.0.0.1:9/", "event_types": ["budget.funded"]},
        headers={"X-Cycles-API-Key": secret},
    )
    assert r.status_code == 403
    assert httpx.get(f"{srv.base_url}/v1/admin/webhooks").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"event_types": ["api_key.created"]},
        {"event_types": ["budget.funded"], "event_categories": ["system"]},
        {"event_types": ["webhook.created"]},
        {"event_types": []},
        {"event_types": ["budget.nope"]},
        {"event_types": ["budget.funded"], "bogus": 1},
    ],
)
def test_tenant_owned_selectors_are_tenant_accessible(
    srv: ServerHandle, tenant: Callable[..., T], body: dict[str, Any]
) -> None:
    t = tenant()
    r = t.http.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "INVALID_REQUEST"
    # The admin write path enforces the same boundary for a tenant-owned target.
    with srv.admin_client() as c:
        r = c.post(
            "/v1/admin/webhooks",
            params={"tenant_id": t.name},
            json={"url": "http://127.0.0.1:9/", **body},
        )
        assert r.status_code == 400, r.text


def test_selector_invariant_on_update_and_system_subscriptions(
    admin: httpx.Client, tenant: Callable[..., T]
) -> None:
    t = tenant()
    sid = t.hook("http://127.0.0.1:9/")["subscription"]["subscription_id"]
    r = t.http.patch(f"/v1/webhooks/{sid}", json={"event_types": []})
    assert r.status_code == 400
    r = t.http.patch(
        f"/v1/webhooks/{sid}", json={"event_types": [], "event_categories": ["budget"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["event_types"] == [] and r.json()["event_categories"] == ["budget"]
    r = t.http.patch(f"/v1/webhooks/{sid}", json={"event_categories": ["policy"]})
    assert r.status_code == 400
    r = admin.patch(f"/v1/admin/webhooks/{sid}", json={"event_categories": []})
    assert r.status_code == 400
    # System-wide subscriptions may select admin-only events.
    r = admin.post(
        "/v1/admin/webhooks",
        json={"url": "http://127.0.0.1:9/", "event_types": ["api_key.created"]},
    )
    assert r.status_code == 201, r.text
    sys_sid = r.json()["subscription"]["subscription_id"]
    assert r.json()["subscription"]["tenant_id"] == "__system__"
    assert admin.patch(
        f"/v1/admin/webhooks/{sys_sid}", json={"event_categories": ["system"]}
    ).json()["event_categories"] == ["system"]
    assert admin.delete(f"/v1/admin/webhooks/{sys_sid}").status_code == 204
    missing = admin.post(
        "/v1/admin/webhooks",
        params={"tenant_id": "no-such-tenant"},
        json={"url": "http://127.0.0.1:9/", "event_types": ["budget.funded"]},
    )
    assert missing.status_code == 404


def test_ssrf_guard(srv: ServerHandle, admin: httpx.Client, tenant: Callable[..., T]) -> None:
    t = tenant()
    path = "/v1/admin/config/webhook-security"
    try:
        assert admin.put(path, json={}).status_code == 200
        config = admin.get(path).json()
        assert "127.0.0.0/8" in config["blocked_cidr_ranges"]
        assert config["allow_http"] is False
        for url in ("http://example.com/x", "https://127.0.0.1/x", "https://localhost/x", "x"):
            r = t.http.post("/v1/webhooks", json={"url": url, "event_types": ["budget.funded"]})
            assert r.status_code == 400, url
        r = admin.put(path, json={"blocked_cidr_ranges": ["not-a-cidr"]})
        assert r.status_code == 400
        r = admin.put(path, json={"allow_http": True, "allowed_url_patterns": ["https://*"]})
        assert r.status_code == 200
        r = t.http.post(
            "/v1/webhooks", json={"url": "http://x.test/", "event_types": ["budget.funded"]}
        )
        assert r.status_code == 400
    finally:
        assert admin.put(path, json=LOOPBACK_OK).status_code == 200


# -- delivery ---------------------------------------------------------------------------------


def test_denial_and_funding_are_delivered_signed(
    srv: ServerHandle, admin: httpx.Client, tenant: Callable[..., T]
) -> None:
    t = tenant({"": 100})
    with receiver() as rx:
        created = t.hook(rx.url, headers={"X-Custom": "yes"})
        sid, secret = created["subscription"]["subscription_id"], created["signing_secret"]
        denied = t.reserve(500)
        assert denied.status_code == 409
        r = admin.post(
            "/v1/admin/budgets/fund",
            params={"tenant_id": t.name, "scope": f"tenant:{t.name}", "unit": UNIT},
            json={"operation": "CREDIT", "amount": amount(50)},
        )
        assert r.status_code == 200
        until(srv, lambda: len(rx.received) >= 2)
        assert [r.event["event_type"] for r in rx.received] == [
            "reservation.denied",
            "budget.funded",
        ]
        for got in rx.received:
            mac = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(got.headers["x-cycles-signature"], f"sha256={mac}")
            assert got.headers["x-cycles-event-id"] == got.event["event_id"]
            assert got.headers["x-cycles-event-type"] == got.event["event_type"]
            assert got.headers["x-cycles-trace-id"] == got.event["trace_id"]
            tp = got.headers["traceparent"].split("-")
            assert tp[0] == "00" and tp[1] == got.event["trace_id"] and tp[3] == "01"
            assert got.headers["user-agent"].startswith("runcycles-server-lite/")
            assert got.headers["x-custom"] == "yes"
            assert got.headers["content-type"] == "application/json"
        assert rx.received[0].event["request_id"] == denied.headers["x-request-id"]
        rows = deliveries(t.http, f"/v1/webhooks/{sid}/deliveries")
        assert {(d["event_type"], d["status"], d["attempts"]) for d in rows} == {
            ("reservation.denied", "SUCCESS", 1),
            ("budget.funded", "SUCCESS", 1),
        }
        assert all(d["response_status"] == 200 and "completed_at" in d for d in rows)
        assert deliveries(admin, f"/v1/admin/webhooks/{sid}/deliveries", status="FAILED") == []
        # Only matching events are delivered, each once (at-least-once, no duplicates here).
        t.reserve(10)
        tick(srv)
        tick(srv)
        assert len(rx.received) == 2
        sub = admin.get(f"/v1/admin/webhooks/{sid}").json()
        assert sub["consecutive_failures"] == 0 and "last_success_at" in sub


def test_failing_receiver_retries_then_fails_and_disables(
    srv: ServerHandle, admin: httpx.Client, tenant: Callable[..., T]
) -> None:
    t = tenant({"": 10})
    with receiver(status=500) as rx:
        sid = t.hook(rx.url, retry_policy=FAST_RETRY, disable_after_failures=1)["subscription"][
            "subscription_id"
        ]
        t.reserve(50)
        until(srv, lambda: len(rx.received) >= 1)
        [first] = deliveries(t.http, f"/v1/webhooks/{sid}/deliveries")
        assert first["status"] == "RETRYING"
        assert first["response_status"] == 500 and "next_retry_at" in first
        until(srv, lambda: len(rx.received) >= 2)
        until(srv, lambda: t.http.get(f"/v1/webhooks/{sid}").json()["status"] == "DISABLED")
        [final] = deliveries(t.http, f"/v1/webhooks/{sid}/deliveries")
        assert final["status"] == "FAILED" and final["attempts"] == 2
        assert final["error_message"] == "HTTP 500"
        # Retries repeat the same signed body.
        assert rx.received[0].body == rx.received[1].body
        evs = admin.get("/v1/admin/events", params={"tenant_id": t.name}).json()["events"]
        kinds = [e["event_type"] for e in evs]
        assert kinds.count("system.webhook_delivery_failed") == 1
        assert kinds.count("webhook.disabled") == 1
        disabled = next(e for e in evs if e["event_type"] == "webhook.disabled")
        assert disabled["data"]["disable_reason"] == "consecutive_failures_exceeded_threshold"
        assert disabled["correlation_id"].startswith(f"webhook_auto_disable:{sid}:")
        # A disabled subscription gets nothing; re-enabling resets the failure count.
        t.reserve(60)
        tick(srv)
        assert len(rx.received) == 2
        r = t.http.patch(f"/v1/webhooks/{sid}", json={"status": "ACTIVE"})
        assert r.json()["status"] == "ACTIVE" and r.json()["consecutive_failures"] == 0


def test_down_receiver_is_retried_with_the_transport_error(
    srv: ServerHandle, tenant: Callable[..., T]
) -> None:
    t = tenant({"": 10})
    sid = t.hook(closed_port_url(), retry_policy=FAST_RETRY)["subscription"]["subscription_id"]
    t.reserve(50)

    def final() -> bool:
        rows = deliveries(t.http, f"/v1/webhooks/{sid}/deliveries")
        return bool(rows) and rows[0]["status"] == "FAILED"

    until(srv, final)
    [row] = deliveries(t.http, f"/v1/webhooks/{sid}/deliveries")
    assert row["attempts"] == 2
    assert "ConnectError" in row["error_message"]
    assert "response_status" not in row


def test_slow_receiver_never_blocks_the_request_path(
    srv: ServerHandle, tenant: Callable[..., T]
) -> None:
    t = tenant({"": 10})
    with receiver() as rx:
        rx.gate = threading.Event()
        t.hook(rx.url)
        t.reserve(50)
        worker = threading.Thread(target=tick, args=(srv,))
        worker.start()
        try:
            # While the dispatcher waits on the receiver, requests are answered.
            assert t.reserve(60).status_code == 409
            assert t.http.get("/v1/webhooks").status_code == 200
        finally:
            rx.gate.set()
            worker.join(30)
        until(srv, lambda: len(rx.received) >= 2)
        assert [e["data"]["requested_amount"] for e in rx.events()] == [50, 60]


def test_test_endpoint_and_replay(
    srv: ServerHandle, admin: httpx.Client, tenant: Callable[..., T]
) -> None:
    t = tenant({"": 10})
    with receiver() as rx:
        sid = t.hook(rx.url)["subscription"]["subscription_id"]
        r = t.http.post(f"/v1/webhooks/{sid}/test")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["response_status"] == 200
        [probe] = rx.events("system.webhook_test")
        assert probe["event_id"] == body["event_id"]
        t.reserve(50)
        until(srv, lambda: len(rx.events("reservation.denied")) == 1)
        r = admin.post(f"/v1/admin/webhooks/{sid}/replay", json={"max_events": 10})
        assert r.status_code == 202, r.text
        assert r.json()["events_queued"] == 1  # the test probe is never replayed
        until(srv, lambda: len(rx.events("reservation.denied")) == 2)
        first, again = rx.events("reservation.denied")
        assert first == again  # same event_id: consumers deduplicate on it
        assert len(deliveries(admin, f"/v1/admin/webhooks/{sid}/deliveries")) == 2
        t.reserve(51)
        t.reserve(52)
        r = admin.post(f"/v1/admin/webhooks/{sid}/replay", json={"max_events": 1})
        assert r.status_code == 400
        future = {"from": "2999-01-01T00:00:00Z", "max_events": 5}
        assert (
            admin.post(f"/v1/admin/webhooks/{sid}/replay", json=future).json()["events_queued"] == 0
        )
    assert admin.post("/v1/admin/webhooks/whsub_nope/replay", json={}).status_code == 404


def test_restart_resumes_pending_and_the_lease_keeps_one_dispatcher(
    srv: ServerHandle, tenant: Callable[..., T]
) -> None:
    t = tenant({"": 10})
    with receiver() as rx:
        t.hook(rx.url)
        t.reserve(50)

        async def two(store: Store) -> tuple[bool, bool]:
            a, b = Dispatcher(store, srv.settings), Dispatcher(store, srv.settings)
            try:
                return await a.tick(), await b.tick()
            finally:
                await a.stop()
                await b.stop()

        assert srv.run_store(two) == (True, False)
        until(srv, lambda: len(rx.received) == 1)


def delivered(server: ServerHandle) -> float:
    """Successful deliveries in /metrics (servers in one process share the counters)."""
    text = httpx.get(f"{server.base_url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "cycles_webhook_deliveries_total" and labels == {"outcome": "SUCCESS"}:
                return sample.value
    return 0.0


def test_background_dispatcher_delivers(tmp_path_factory: pytest.TempPathFactory) -> None:
    with contextlib.ExitStack() as stack:
        s = stack.enter_context(
            running_server(tmp_path_factory.mktemp("bg"), webhook_interval_s=0.05)
        )
        rx = stack.enter_context(receiver())
        with s.admin_client() as c:
            c.put("/v1/admin/config/webhook-security", json=LOOPBACK_OK)
        t = T(s, {"": 10})
        stack.callback(t.http.close)
        t.hook(rx.url)
        delivered_before = delivered(s)
        t.reserve(50)
        deadline = time.monotonic() + 15
        while not rx.received:
            assert time.monotonic() < deadline, "the background dispatcher delivered nothing"
            time.sleep(0.05)
        assert rx.received[0].event["event_type"] == "reservation.denied"
        # The dispatcher's outcome reaches /metrics (it is recorded just after the receiver
        # answered, so poll).
        while delivered(s) <= delivered_before:
            assert time.monotonic() < deadline, "the delivery never showed up in /metrics"
            time.sleep(0.05)
