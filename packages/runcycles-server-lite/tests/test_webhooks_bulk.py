"""Admin operations over many subscriptions: the bulk action (gated, replayable, one event
per changed row) and the tenant-close cascade."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from webhook_support import admin, srv

from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle
from runcycles_server_lite.webhooks import subscriptions as subs

__all__ = ["admin", "srv"]  # fixtures

BULK = "/v1/admin/webhooks/bulk-action"


def tenant(srv: ServerHandle) -> str:
    name = f"bulk-{uuid.uuid4().hex[:10]}"
    srv.provision(name, {"": 100})
    return name


def hook(admin: httpx.Client, tenant_id: str, url: str) -> str:
    r = admin.post(
        "/v1/admin/webhooks",
        params={"tenant_id": tenant_id},
        json={"url": url, "event_types": ["reservation.denied"]},
    )
    assert r.status_code == 201, r.text
    sid: str = r.json()["subscription"]["subscription_id"]
    return sid


def bulk(admin: httpx.Client, action: str, key: str | None = None, **filt: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "action": action,
        "filter": filt.pop("filter", filt),
        "idempotency_key": key or uuid.uuid4().hex,
    }
    return admin.post(BULK, json=body)


def status(admin: httpx.Client, sid: str) -> str | None:
    r = admin.get(f"/v1/admin/webhooks/{sid}")
    if r.status_code == 404:
        return None
    value: str = r.json()["status"]
    return value


def events_of(admin: httpx.Client, tenant_id: str, correlation: str) -> list[dict[str, Any]]:
    r = admin.get(
        "/v1/admin/events", params={"tenant_id": tenant_id, "correlation_id": correlation}
    )
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


def ids(rows: list[dict[str, Any]]) -> set[str]:
    return {row["id"] for row in rows}


def test_pause_resume_delete_by_filter(srv: ServerHandle, admin: httpx.Client) -> None:
    a, b = tenant(srv), tenant(srv)
    a1 = hook(admin, a, "http://127.0.0.1:9/staging/a1")
    a2 = hook(admin, a, "http://127.0.0.1:9/staging/a2")
    a3 = hook(admin, a, "http://127.0.0.1:9/prod/a3")
    b1 = hook(admin, b, "http://127.0.0.1:9/staging/b1")

    # The expected_count gate: a mismatch writes nothing.
    r = admin.post(
        BULK,
        json={
            "action": "PAUSE",
            "filter": {"tenant_id": a},
            "expected_count": 2,
            "idempotency_key": uuid.uuid4().hex,
        },
    )
    assert r.status_code == 409 and r.json()["error"] == "COUNT_MISMATCH", r.text
    assert {status(admin, s) for s in (a1, a2, a3)} == {"ACTIVE"}

    key = uuid.uuid4().hex
    r = bulk(admin, "PAUSE", key, tenant_id=a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == "PAUSE" and body["total_matched"] == 3
    assert ids(body["succeeded"]) == {a1, a2, a3}
    assert body["failed"] == [] and body["skipped"] == [] and body["idempotency_key"] == key
    assert {status(admin, s) for s in (a1, a2, a3)} == {"PAUSED"}
    assert status(admin, b1) == "ACTIVE"
    paused = events_of(admin, a, f"webhook_bulk_action:pause:{r.headers['x-request-id']}")
    assert sorted(e["event_type"] for e in paused) == ["webhook.paused"] * 3

    # The same key replays the first answer; a new key finds nothing left to do.
    again = bulk(admin, "PAUSE", key, tenant_id=a)
    assert again.status_code == 200 and again.json() == body
    other = bulk(admin, "RESUME", key, tenant_id=a)
    assert other.status_code == 409 and other.json()["error"] == "IDEMPOTENCY_MISMATCH"
    r = bulk(admin, "PAUSE", tenant_id=a)
    assert ids(r.json()["skipped"]) == {a1, a2, a3}
    assert {row["reason"] for row in r.json()["skipped"]} == {"ALREADY_IN_TARGET_STATE"}
    assert events_of(admin, a, f"webhook_bulk_action:pause:{r.headers['x-request-id']}") == []

    # Across tenants by search: A's two staging hooks resume, B's was never paused.
    r = bulk(admin, "RESUME", search="STAGING")
    assert r.status_code == 200, r.text
    assert {a1, a2, b1} <= ids(r.json()["succeeded"]) | ids(r.json()["skipped"])
    assert {a1, a2} <= ids(r.json()["succeeded"]) and b1 in ids(r.json()["skipped"])
    assert (status(admin, a1), status(admin, a2), status(admin, a3)) == (
        "ACTIVE",
        "ACTIVE",
        "PAUSED",
    )

    # DISABLED cannot be resumed (only an update re-enables it); PAUSE leaves it alone.
    async def disable(store: Store) -> None:
        await store.redis.hset(subs.record_key(store, a, a3), "status", "DISABLED")

    srv.run_store(disable)
    r = bulk(admin, "RESUME", tenant_id=a, status="DISABLED")
    assert r.json()["total_matched"] == 1
    assert r.json()["failed"] == [
        {"id": a3, "error_code": "INVALID_TRANSITION", "message": r.json()["failed"][0]["message"]}
    ]
    assert status(admin, a3) == "DISABLED"
    r = bulk(admin, "PAUSE", tenant_id=a, status="DISABLED")
    assert ids(r.json()["skipped"]) == {a3}

    r = bulk(admin, "DELETE", tenant_id=b)
    assert ids(r.json()["succeeded"]) == {b1}
    assert status(admin, b1) is None
    deleted = events_of(admin, b, f"webhook_bulk_action:delete:{r.headers['x-request-id']}")
    assert [e["event_type"] for e in deleted] == ["webhook.deleted"]

    # One audit entry per call, not per row.
    logs = admin.get(
        "/v1/admin/audit/logs", params={"operation": "bulkActionWebhooks", "limit": 100}
    ).json()["logs"]
    assert r.headers["x-request-id"] in [entry["request_id"] for entry in logs]
    assert [entry["request_id"] for entry in logs].count(r.headers["x-request-id"]) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"action": "PAUSE", "filter": {}, "idempotency_key": "k"}, "INVALID_REQUEST"),
        ({"action": "ARCHIVE", "filter": {"status": "ACTIVE"}, "idempotency_key": "k"}, None),
        ({"action": "PAUSE", "filter": {"colour": "red"}, "idempotency_key": "k"}, None),
        ({"action": "PAUSE", "filter": {"search": "x" * 129}, "idempotency_key": "k"}, None),
        ({"action": "PAUSE", "filter": {"event_type": "no.such"}, "idempotency_key": "k"}, None),
    ],
)
def test_bad_requests_are_400(admin: httpx.Client, body: dict[str, Any], code: str | None) -> None:
    r = admin.post(BULK, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (code or "INVALID_REQUEST")


def test_tenant_keys_cannot_bulk_act(srv: ServerHandle) -> None:
    secret = srv.provision(f"bulk-{uuid.uuid4().hex[:10]}", {"": 100})
    r = httpx.post(
        f"{srv.base_url}{BULK}",
        headers={"X-Cycles-API-Key": secret},
        json={"action": "PAUSE", "filter": {"status": "ACTIVE"}, "idempotency_key": "k"},
    )
    assert r.status_code in (401, 403), r.text


def test_closing_a_tenant_disables_its_webhooks_once(
    srv: ServerHandle, admin: httpx.Client
) -> None:
    a = tenant(srv)
    active = hook(admin, a, "http://127.0.0.1:9/a")
    paused = hook(admin, a, "http://127.0.0.1:9/p")
    disabled = hook(admin, a, "http://127.0.0.1:9/d")
    assert admin.patch(f"/v1/admin/webhooks/{paused}", json={"status": "PAUSED"}).status_code == 200

    async def disable(store: Store) -> None:
        await store.redis.hset(subs.record_key(store, a, disabled), "status", "DISABLED")

    srv.run_store(disable)
    r = admin.patch(f"/v1/admin/tenants/{a}", json={"status": "CLOSED"})
    assert r.status_code == 200, r.text
    assert {status(admin, s) for s in (active, paused, disabled)} == {"DISABLED"}

    listed = admin.get(
        "/v1/admin/events",
        params={"tenant_id": a, "event_type": "webhook.disabled_via_tenant_cascade"},
    ).json()["events"]
    by_sub = {e["data"]["subscription_id"]: e["data"] for e in listed}
    assert set(by_sub) == {active, paused}  # none for the one already DISABLED
    assert by_sub[active]["prior_status"] == "ACTIVE"
    assert by_sub[paused]["prior_status"] == "PAUSED"
    assert {d["new_status"] for d in by_sub.values()} == {"DISABLED"}
    assert {d["cascade_reason"] for d in by_sub.values()} == {"tenant_closed"}

    # Rule 2: a closed tenant's subscriptions cannot be re-enabled or changed.
    r = admin.patch(f"/v1/admin/webhooks/{active}", json={"status": "ACTIVE"})
    assert r.status_code == 409 and r.json()["error"] == "TENANT_CLOSED", r.text
    assert status(admin, active) == "DISABLED"
