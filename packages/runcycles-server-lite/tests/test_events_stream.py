"""The governance event stream: events written atomically by the mutation's own script, the
spec's Event envelope, and the admin and tenant query endpoints."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from runtime_support import Tenant, TenantFactory, key, mk

from runcycles_server_lite.auth import DEFAULT_PERMISSIONS
from runcycles_server_lite.store import Store
from runcycles_server_lite.sweeper import Sweeper
from runcycles_server_lite.testing import ServerHandle

__all__ = ["mk"]

READER = [*DEFAULT_PERMISSIONS, "events:read"]
# Event's properties (additionalProperties: false) and its required ones.
EVENT_FIELDS = {
    "event_id",
    "event_type",
    "category",
    "timestamp",
    "tenant_id",
    "scope",
    "actor",
    "source",
    "data",
    "correlation_id",
    "request_id",
    "trace_id",
    "metadata",
}
EVENT_REQUIRED = {"event_id", "event_type", "category", "timestamp", "tenant_id", "source"}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def admin_events(server: ServerHandle, **params: Any) -> httpx.Response:
    with server.admin_client() as c:
        return c.get("/v1/admin/events", params=params)


def events_of(server: ServerHandle, tenant: str, **params: Any) -> list[dict[str, Any]]:
    r = admin_events(server, tenant_id=tenant, limit=100, **params)
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["events"]
    return rows


def check_envelope(ev: dict[str, Any]) -> None:
    assert EVENT_REQUIRED <= set(ev) <= EVENT_FIELDS, ev
    assert ev["category"] == ev["event_type"].split(".")[0]
    assert ISO.match(ev["timestamp"]), ev["timestamp"]
    assert re.match(r"^[0-9a-f]{32}$", ev["trace_id"])
    if "actor" in ev:
        assert set(ev["actor"]) <= {"type", "key_id", "source_ip"}


def test_denied_reservation_is_an_event_with_the_request_ids(mk: TenantFactory) -> None:
    t = mk({"": 100})
    r = t.reserve(500)
    assert r.status_code == 409
    [ev] = events_of(t.server, t.name, event_type="reservation.denied")
    check_envelope(ev)
    assert ev["tenant_id"] == t.name
    assert ev["source"] == "cycles-server"
    assert ev["scope"] == f"tenant:{t.name}"
    assert ev["request_id"] == r.headers["x-request-id"]
    assert ev["trace_id"] == r.headers["x-cycles-trace-id"]
    assert ev["actor"]["type"] == "api_key"
    assert ev["actor"]["key_id"].startswith("key_")
    data = ev["data"]
    assert data["reason_code"] == "BUDGET_EXCEEDED"
    assert data["requested_amount"] == 500
    assert data["remaining"] == 100
    assert data["unit"] == "USD_MICROCENTS"
    assert data["subject"]["tenant"] == t.name
    assert data["action"]["kind"] == "llm.completion"
    # A dry run is an evaluation, not a denial of a live reservation.
    assert t.reserve(500, dry_run=True).json()["decision"] == "DENY"
    assert len(events_of(t.server, t.name, event_type="reservation.denied")) == 1


def test_get_event_by_id_returns_the_listed_record(mk: TenantFactory) -> None:
    t = mk({"": 100})
    t.reserve(500)
    [ev] = events_of(t.server, t.name, event_type="reservation.denied")
    with t.server.admin_client() as c:
        got = c.get(f"/v1/admin/events/{ev['event_id']}")
        assert got.status_code == 200
        assert got.json() == ev
        for missing in ("evt_nope", f"evt_{t.name}_1-0", "x"):
            r = c.get(f"/v1/admin/events/{missing}")
            assert r.status_code == 404, missing
            assert r.json()["error"] == "EVENT_NOT_FOUND"
    assert httpx.get(f"{t.server.base_url}/v1/admin/events/{ev['event_id']}").status_code == 401


def test_thresholds_exhaustion_and_falling_back(mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:w": 1000})
    sub = t.subject(workspace="w")
    rid = t.reserve_ok(850, subject=sub)
    crossed = events_of(t.server, t.name, event_type="budget.threshold_crossed")
    assert {(e["scope"], e["data"]["threshold"], e["data"]["direction"]) for e in crossed} == {
        (f"tenant:{t.name}", 0.8, "rising"),
        (f"tenant:{t.name}/workspace:w", 0.8, "rising"),
    }
    d = crossed[0]["data"]
    assert d["allocated"] == 1000 and d["reserved"] == 850 and d["remaining"] == 150
    assert d["utilization"] == pytest.approx(0.85)
    assert crossed[0]["correlation_id"] == rid
    assert t.release(rid).status_code == 200
    falling = [
        e
        for e in events_of(t.server, t.name, event_type="budget.threshold_crossed")
        if e["data"]["direction"] == "falling"
    ]
    assert len(falling) == 2
    rid = t.reserve_ok(1000, subject=sub)
    exhausted = events_of(t.server, t.name, event_type="budget.exhausted")
    assert len(exhausted) == 2
    assert exhausted[0]["data"]["remaining"] == 0
    assert t.commit(rid, 1000).status_code == 200


def test_commit_overage_debt_and_over_limit(server: ServerHandle, mk: TenantFactory) -> None:
    t = mk({"": 100}, overdraft_limit=50, commit_overage_policy="ALLOW_WITH_OVERDRAFT")
    rid = t.reserve_ok(80, overage_policy="ALLOW_WITH_OVERDRAFT")
    assert t.commit(rid, 140).status_code == 200
    [over] = events_of(server, t.name, event_type="reservation.commit_overage")
    assert over["data"] == {
        "reservation_id": rid,
        "scope": f"tenant:{t.name}",
        "unit": "USD_MICROCENTS",
        "estimated_amount": 80,
        "actual_amount": 140,
        "overage": 60,
        "overage_policy": "ALLOW_WITH_OVERDRAFT",
        "debt_incurred": 40,
    }
    [debt] = events_of(server, t.name, event_type="budget.debt_incurred")
    assert debt["data"]["debt_incurred"] == 40
    assert debt["data"]["total_debt"] == 40
    assert debt["data"]["reservation_id"] == rid
    assert events_of(server, t.name, event_type="budget.over_limit_entered") == []
    # A direct debit the scope cannot cover (ALLOW_IF_AVAILABLE) marks it over its limit.
    assert t.event(30, overage_policy="ALLOW_IF_AVAILABLE").status_code == 201
    [entered] = events_of(server, t.name, event_type="budget.over_limit_entered")
    assert entered["data"]["is_over_limit"] is True
    assert entered["data"]["debt"] == 40
    assert entered["data"]["debt_utilization"] == pytest.approx(0.8)


def test_expiry_emits_reservation_expired(server: ServerHandle, mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100, ttl_ms=1000, grace_period_ms=0)
    time.sleep(1.05)
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:

        async def sweep(store: Store) -> None:
            await Sweeper(store, server.settings).sweep()

        server.run_store(sweep)
        found = events_of(server, t.name, event_type="reservation.expired")
        time.sleep(0.05)
    [ev] = found
    check_envelope(ev)
    assert ev["source"] == "expiry-sweeper"
    assert ev["actor"] == {"type": "system"}
    assert "request_id" not in ev
    assert ev["correlation_id"] == rid
    assert ev["data"]["reservation_id"] == rid
    assert ev["data"]["estimated_amount"] == 100
    assert ev["data"]["extensions_used"] == 0
    assert ISO.match(ev["data"]["created_at"]) and ISO.match(ev["data"]["expired_at"])


def test_tenant_plane_sees_only_its_own_tenant_accessible_events(
    server: ServerHandle, mk: TenantFactory
) -> None:
    a = mk({"": 10}, permissions=READER)
    b = mk({"": 10}, permissions=READER)
    a.reserve(50)
    b.reserve(50)
    b.reserve(60)
    rows = a.http.get("/v1/events").json()["events"]
    assert rows and {e["tenant_id"] for e in rows} == {a.name}
    assert [e["event_type"] for e in rows if e["category"] == "reservation"] == [
        "reservation.denied"
    ]
    rows = b.http.get("/v1/events", params={"event_type": "reservation.denied"}).json()
    assert [e["data"]["requested_amount"] for e in rows["events"]] == [60, 50]
    # api_key.* is admin-only: a failed login is in the stream but not on the tenant plane.
    a.http.get("/v1/events", headers={"X-Cycles-API-Key": "cyc_live_nope"})
    assert a.http.get("/v1/events", params={"category": "api_key"}).json()["events"] == []
    plain = mk({"": 10})
    r = plain.http.get("/v1/events")
    assert r.status_code == 403
    assert r.json()["error"] == "FORBIDDEN"
    assert httpx.get(f"{server.base_url}/v1/events").status_code == 401


def test_auth_failures_are_events(server: ServerHandle) -> None:
    r = httpx.get(
        f"{server.base_url}/v1/balances",
        params={"tenant": "x"},
        headers={"X-Cycles-API-Key": "cyc_live_" + key()},
    )
    assert r.status_code == 401
    rows = events_of(server, "__system__", event_type="api_key.auth_failed")
    mine = [e for e in rows if e.get("request_id") == r.headers["x-request-id"]]
    assert len(mine) == 1
    assert mine[0]["data"]["failure_reason"] == "key_not_found"
    assert mine[0]["tenant_id"] == "__system__"


def test_cursor_pagination_walks_every_event_once(mk: TenantFactory) -> None:
    t = mk({"": 1}, permissions=READER)
    for n in range(7):
        assert t.reserve(10 + n).status_code == 409
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 3, "event_type": "reservation.denied"}
    while True:
        body = t.http.get("/v1/events", params=params).json()
        seen += [e["data"]["requested_amount"] for e in body["events"]]
        if not body["has_more"]:
            assert "next_cursor" not in body
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [16, 15, 14, 13, 12, 11, 10]
    asc = t.http.get(
        "/v1/events",
        params={"sort_dir": "asc", "limit": 100, "event_type": "reservation.denied"},
    ).json()["events"]
    assert [e["data"]["requested_amount"] for e in asc] == [10, 11, 12, 13, 14, 15, 16]
    first = t.http.get("/v1/events", params={"limit": 2}).json()
    other = t.http.get(
        "/v1/events", params={"limit": 2, "cursor": first["next_cursor"], "scope": "tenant:x"}
    )
    assert other.status_code == 400
    assert t.http.get("/v1/events", params={"cursor": "!!"}).status_code == 400


def test_admin_filters_and_sorts(server: ServerHandle, mk: TenantFactory) -> None:
    t = mk({"": 100, "workspace:w": 1})
    r = t.reserve(5, subject=t.subject(workspace="w"))
    trace = r.headers["x-cycles-trace-id"]
    t.reserve(600)
    assert len(events_of(server, t.name, trace_id=trace)) == 1
    assert len(events_of(server, t.name, request_id=r.headers["x-request-id"])) == 1
    scoped = events_of(
        server, t.name, scope=f"tenant:{t.name}/workspace", event_type="reservation.denied"
    )
    assert [e["data"]["requested_amount"] for e in scoped] == [5]
    assert len(events_of(server, t.name, search="WORKSPACE:W", category="reservation")) == 1
    assert len(events_of(server, t.name, category="reservation")) == 2
    assert len(events_of(server, t.name, category="budget")) == 2  # the two budget.created
    assert events_of(server, t.name, category="policy") == []
    by_scope = events_of(server, t.name, sort_by="scope", sort_dir="asc")
    assert [e.get("scope", "") for e in by_scope] == sorted(e.get("scope", "") for e in by_scope)
    future = events_of(server, t.name, **{"from": "2999-01-01T00:00:00Z"})
    assert future == []
    everyone = admin_events(server, event_type="reservation.denied", limit=100).json()["events"]
    assert {t.name} <= {e["tenant_id"] for e in everyone}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "x"},
        {"event_type": "budget.nope"},
        {"category": "money"},
        {"trace_id": "XYZ"},
        {"search": "s" * 129},
        {"from": "yesterday"},
        {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"sort_by": "amount"},
        {"sort_dir": "up"},
        {"tenant_id": "Bad Tenant"},
    ],
)
def test_bad_query_parameters_are_400(server: ServerHandle, params: dict[str, Any]) -> None:
    r = admin_events(server, **params)
    assert r.status_code == 400, (params, r.text)
    assert r.json()["error"] == "INVALID_REQUEST"


def test_unknown_parameters_and_custom_types_are_accepted(server: ServerHandle) -> None:
    assert admin_events(server, whatever="1").status_code == 200
    assert admin_events(server, event_type="custom.billing.sent").json()["events"] == []


def test_admin_list_needs_the_admin_key(server: ServerHandle, mk: TenantFactory) -> None:
    t: Tenant = mk({"": 1}, permissions=READER)
    assert t.http.get("/v1/admin/events").status_code == 401
    assert httpx.get(f"{server.base_url}/v1/admin/events").status_code == 401
