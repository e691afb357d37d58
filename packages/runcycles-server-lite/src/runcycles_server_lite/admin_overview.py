"""Admin plane: ``GET /v1/admin/overview``, the dashboard's one-request summary.

Tenant and budget aggregates are computed from the per-tenant indexes. This server has no
webhooks or event stream yet, so those sections are present (the schema requires them) and
empty.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import provisioning as prov
from .admin_common import iso, require_admin
from .http import JSONResponse

EVENT_WINDOW_SECONDS = 3600
TOP = 10


async def overview(request: Request) -> Response:
    """GET /v1/admin/overview: tenant and budget counts, the worst over-limit and debt
    scopes."""
    svc = require_admin(request)
    tenants = await prov.list_tenants(svc.store)
    budgets = await prov.list_budgets(svc.store)
    tstatus = Counter(t.get("status", "ACTIVE") for t in tenants)
    bstatus = Counter(b.get("status", "ACTIVE") for b in budgets)
    over = [b for b in budgets if b.get("is_over_limit") == "true"]
    debt = [b for b in budgets if int(b.get("debt") or 0) > 0]
    over.sort(key=lambda b: int(b.get("debt") or 0), reverse=True)
    debt.sort(key=lambda b: int(b.get("debt") or 0), reverse=True)
    body: dict[str, Any] = {
        "as_of": iso(await svc.store.time_ms()),
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
        "webhook_counts": {"total": 0, "active": 0, "disabled": 0, "with_failures": 0},
        "failing_webhooks": [],
        "event_counts": {"total_recent": 0, "by_category": {}},
        "recent_denials": [],
        "recent_expiries": [],
    }
    return JSONResponse(body)
