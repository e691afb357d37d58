"""GET /v1/admin/overview: the event and webhook sections come from the streams and hooks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from runtime_support import TenantFactory, mk

from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle
from runcycles_server_lite.webhooks import subscriptions as subs

__all__ = ["mk"]


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as c:
        yield c


def overview(admin: httpx.Client) -> dict[str, Any]:
    r = admin.get("/v1/admin/overview")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_recent_denials_expiries_and_counts(
    server: ServerHandle, admin: httpx.Client, mk: TenantFactory
) -> None:
    t = mk({"": 100})
    before = overview(admin)
    assert t.reserve(500).status_code == 409
    rid = t.reserve_ok(10, ttl_ms=1000, grace_period_ms=0)

    deadline = time.monotonic() + 15
    while True:
        now = overview(admin)
        if any(e["data"].get("reservation_id") == rid for e in now["recent_expiries"]):
            break
        assert time.monotonic() < deadline, "the expiry never reached the overview"
        time.sleep(0.2)

    denials = now["recent_denials"]
    mine = [e for e in denials if e["tenant_id"] == t.name]
    assert len(mine) == 1
    assert mine[0]["event_type"] == "reservation.denied"
    assert mine[0]["event_id"].startswith(f"evt_{t.name}_")
    # Newest first, and each one is a whole Event (it can be fetched by its id).
    stamps = [e["timestamp"] for e in denials]
    assert stamps == sorted(stamps, reverse=True)
    got = admin.get(f"/v1/admin/events/{mine[0]['event_id']}")
    assert got.status_code == 200 and got.json() == mine[0]

    def reasons(body: dict[str, Any]) -> dict[str, int]:
        value: dict[str, int] = body.get("recent_denials_by_reason") or {}
        return value

    assert reasons(now).get("BUDGET_EXCEEDED", 0) - reasons(before).get("BUDGET_EXCEEDED", 0) == 1
    counts, was = now["event_counts"], before["event_counts"]
    assert counts["total_recent"] >= was["total_recent"] + 2
    assert counts["by_category"]["reservation"] >= was["by_category"].get("reservation", 0) + 2
    assert sum(counts["by_category"].values()) == counts["total_recent"]


def test_webhook_counts_and_failing_hooks(
    server: ServerHandle, admin: httpx.Client, mk: TenantFactory
) -> None:
    t = mk({"": 100})
    before = overview(admin)["webhook_counts"]
    # An IP literal outside the blocked ranges: no DNS lookup, and nothing is ever delivered.
    r = admin.post(
        "/v1/admin/webhooks",
        params={"tenant_id": t.name},
        json={"url": "https://192.0.2.10/hook", "event_types": ["budget.funded"]},
    )
    assert r.status_code == 201, r.text
    sid = r.json()["subscription"]["subscription_id"]
    after = overview(admin)
    counts = after["webhook_counts"]
    assert counts["total"] == before["total"] + 1
    assert counts["active"] == before["active"] + 1
    assert sid not in [h["subscription_id"] for h in after["failing_webhooks"]]

    async def failing(store: Store) -> None:
        await store.redis.hset(
            subs.record_key(store, t.name, sid),
            mapping={"consecutive_failures": "7", "last_failure_at": "1700000000000"},
        )

    server.run_store(failing)
    body = overview(admin)
    rows = {h["subscription_id"]: h for h in body["failing_webhooks"]}
    assert rows[sid] == {
        "subscription_id": sid,
        "url": "https://192.0.2.10/hook",
        "consecutive_failures": 7,
        "last_failure_at": "2023-11-14T22:13:20.000Z",
    }
    assert body["webhook_counts"]["with_failures"] >= 1
