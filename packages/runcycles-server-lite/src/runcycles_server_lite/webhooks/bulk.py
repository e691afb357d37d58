"""``POST /v1/admin/webhooks/bulk-action`` (bulkActionWebhooks): PAUSE, RESUME or DELETE every
subscription matching a filter.

The same safety as the tenant and budget bulk actions: the expected_count gate and the
500-row cap are checked before any write, and the idempotency key replays the first response
for 15 minutes. Each row that changes emits its one lifecycle event (``webhook.paused`` /
``resumed`` / ``deleted``) correlated as ``webhook_bulk_action:<action>:<request_id>``; skipped
and failed rows emit nothing. The audit log gets one entry for the call (the route's).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runcycles_server_lite.admin.common import bulk_gate, replayable_bulk, require_admin
from runcycles_server_lite.errors import invalid
from runcycles_server_lite.http import read_json, request_ids
from runcycles_server_lite.models import parse
from runcycles_server_lite.services import Services

from . import subscriptions as subs
from .models import WebhookBulkAction

# action -> (the status it sets, its event type)
_TARGET = {
    "PAUSE": ("PAUSED", "webhook.paused"),
    "RESUME": ("ACTIVE", "webhook.resumed"),
}


async def bulk_action(request: Request) -> Response:
    """POST /v1/admin/webhooks/bulk-action."""
    svc = require_admin(request)
    req = parse(WebhookBulkAction, await read_json(request))
    f = req.filter
    if f.tenant_id is None and f.status is None and f.event_type is None and f.search is None:
        raise invalid("filter must name at least one of tenant_id, status, event_type, search")
    request_id, _ = request_ids(request)
    return await replayable_bulk(svc, "webhooks-bulk", req, lambda: _run(svc, req, request_id))


async def _matching(svc: Services, req: WebhookBulkAction) -> list[dict[str, str]]:
    f = req.filter
    owners = [f.tenant_id] if f.tenant_id else await subs.all_tenants(svc.store)
    return subs.matching(
        await subs.list_for(svc.store, owners),
        status=f.status,
        event_type=f.event_type,
        search=f.search.lower() if f.search else None,
    )


async def _run(svc: Services, req: WebhookBulkAction, request_id: str) -> dict[str, Any]:
    matched = await _matching(svc, req)
    bulk_gate(len(matched), req.expected_count)
    correlation = f"webhook_bulk_action:{req.action.lower()}:{request_id}"
    succeeded: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for rec in matched:
        sid = rec["subscription_id"]
        # Re-read: an earlier row's change or a concurrent call may have moved this one.
        current = await subs.find(svc.store, sid)
        if current is None:
            skipped.append({"id": sid, "reason": "ALREADY_DELETED"})
            continue
        if req.action == "DELETE":
            await subs.delete(svc.store, current, correlation_id=correlation)
            succeeded.append({"id": sid})
            continue
        status = current.get("status", "ACTIVE")
        target, event_type = _TARGET[req.action]
        if status == target or (req.action == "PAUSE" and status == "DISABLED"):
            skipped.append({"id": sid, "reason": "ALREADY_IN_TARGET_STATE"})
            continue
        if req.action == "RESUME" and status == "DISABLED":
            failed.append(
                {
                    "id": sid,
                    "error_code": "INVALID_TRANSITION",
                    "message": "a DISABLED subscription cannot be resumed; update it to ACTIVE",
                }
            )
            continue
        await subs.set_status(svc.store, current, target, event_type, correlation_id=correlation)
        succeeded.append({"id": sid})
    return {
        "action": req.action,
        "total_matched": len(matched),
        "succeeded": succeeded,
        "failed": failed,
        "skipped": skipped,
        "idempotency_key": req.idempotency_key,
    }
