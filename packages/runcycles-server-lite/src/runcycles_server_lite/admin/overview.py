"""Admin plane: ``GET /v1/admin/overview``, the dashboard's one-request summary.

Tenant and budget aggregates are computed from the per-tenant indexes, webhook health from
the subscriptions, and the event sections from the per-tenant event streams over the last
``EVENT_WINDOW_SECONDS`` (counting stops at ``EVENT_SCAN_LIMIT`` entries per stream, so a
flood of events cannot make the dashboard's one request slow).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from runcycles_server_lite import events
from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.http import JSONResponse
from runcycles_server_lite.store import Store
from runcycles_server_lite.webhooks import subscriptions as subs

from .common import iso, require_admin

_CHUNK = 500

EVENT_WINDOW_SECONDS = 3600
EVENT_SCAN_LIMIT = 20_000
TOP = 10


async def overview(request: Request) -> Response:
    """GET /v1/admin/overview: tenant and budget counts, the worst over-limit and debt
    scopes."""
    svc = require_admin(request)
    now = await svc.store.time_ms()
    tenants = await prov.list_tenants(svc.store)
    budgets = await prov.list_budgets(svc.store)
    tstatus = Counter(t.get("status", "ACTIVE") for t in tenants)
    bstatus = Counter(b.get("status", "ACTIVE") for b in budgets)
    over = [b for b in budgets if b.get("is_over_limit") == "true"]
    debt = [b for b in budgets if int(b.get("debt") or 0) > 0]
    over.sort(key=lambda b: int(b.get("debt") or 0), reverse=True)
    debt.sort(key=lambda b: int(b.get("debt") or 0), reverse=True)
    body: dict[str, Any] = {
        "as_of": iso(now),
        "event_window_seconds": EVENT_WINDOW_SECONDS,
        "tenant_counts": {
            "total": len(tenants),
            "active": tstatus["ACTIVE"],
            "suspended": tstatus["SUSPENDED"],
            "closed": tstatus["CLOSED"],
        },
        "budget_counts": {
            "total": len(budgets),
            "active": bstatus["ACTIVE"],
            "frozen": bstatus["FROZEN"],
            "closed": bstatus["CLOSED"],
            "over_limit": len(over),
            "with_debt": len(debt),
            "by_unit": dict(Counter(b.get("unit", "") for b in budgets)),
        },
        "over_limit_scopes": [
            {
                "scope": b["scope"],
                "unit": b["unit"],
                "allocated": int(b.get("allocated") or 0),
                "remaining": int(b.get("remaining") or 0),
                "debt": int(b.get("debt") or 0),
            }
            for b in over[:TOP]
        ],
        "debt_scopes": [
            {
                "scope": b["scope"],
                "unit": b["unit"],
                "debt": int(b.get("debt") or 0),
                "overdraft_limit": int(b.get("overdraft_limit") or 0),
            }
            for b in debt[:TOP]
        ],
        **await _webhooks(svc.store),
        **await _events(svc.store, [str(t["tenant_id"]) for t in tenants], now),
    }
    return JSONResponse(body)


async def _webhooks(store: Store) -> dict[str, Any]:
    hooks = await subs.list_for(store, await subs.all_tenants(store))
    status = Counter(h.get("status", "ACTIVE") for h in hooks)
    failing = [h for h in hooks if int(h.get("consecutive_failures") or 0) > 0]
    failing.sort(key=lambda h: int(h.get("consecutive_failures") or 0), reverse=True)
    rows = []
    for h in failing[:TOP]:
        row: dict[str, Any] = {
            "subscription_id": h["subscription_id"],
            "url": h.get("url", ""),
            "consecutive_failures": int(h.get("consecutive_failures") or 0),
        }
        if h.get("last_failure_at"):
            row["last_failure_at"] = iso(int(h["last_failure_at"]))
        rows.append(row)
    return {
        "webhook_counts": {
            "total": len(hooks),
            "active": status["ACTIVE"],
            "disabled": status["DISABLED"],
            "with_failures": len(failing),
        },
        "failing_webhooks": rows,
    }


async def _events(store: Store, tenants: list[str], now: int) -> dict[str, Any]:
    """Event counts by category and the newest denials and expiries within the window."""
    since = str(max(now - EVENT_WINDOW_SECONDS * 1000, 0))
    by_category: Counter[str] = Counter()
    denials: Counter[str] = Counter()
    recent: dict[str, list[tuple[str, str, str]]] = {
        "reservation.denied": [],
        "reservation.expired": [],
    }
    for tenant in [events.SYSTEM_TENANT, *tenants]:
        key = store.keys.events(tenant)
        high, seen = "+", 0
        while seen < EVENT_SCAN_LIMIT:  # newest first
            chunk = await store.redis.xrevrange(key, high, since, count=_CHUNK)
            for entry_id, fields in chunk:
                raw = fields.get("e")
                if not raw:
                    continue
                ev = orjson.loads(raw)
                by_category[str(ev.get("category", ""))] += 1
                if ev.get("event_type") == "reservation.denied":
                    data = ev.get("data") or {}
                    denials[str(data.get("reason_code") or "UNKNOWN")] += 1
                newest = recent.get(str(ev.get("event_type")))
                if newest is not None and len(newest) < TOP:
                    newest.append((entry_id, tenant, raw))
            seen += len(chunk)
            if len(chunk) < _CHUNK:
                break
            high = "(" + chunk[-1][0]

    def newest_first(rows: list[tuple[str, str, str]]) -> list[orjson.Fragment]:
        rows.sort(key=lambda r: events.entry_key(r[0]), reverse=True)
        return [orjson.Fragment(events.render(t, sid, raw)) for sid, t, raw in rows[:TOP]]

    return {
        "event_counts": {
            "total_recent": sum(by_category.values()),
            "by_category": dict(by_category),
        },
        "recent_denials": newest_first(recent["reservation.denied"]),
        "recent_expiries": newest_first(recent["reservation.expired"]),
        "recent_denials_by_reason": dict(denials),
    }
