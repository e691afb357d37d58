"""HTTP handlers for webhook subscriptions on both planes, delivery logs, the test probe,
replay, and the webhook security config.

Admin plane: ``/v1/admin/webhooks...`` (admin key; ``tenant_id`` query on create, omitted =
``__system__``). Tenant plane: ``/v1/webhooks...`` (a tenant key with webhooks:read/write,
or the admin key acting for the owning tenant). A tenant never sees another tenant's
subscriptions (404).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from runcycles_server_lite import events
from runcycles_server_lite.admin.common import caller, field_key, page, require_admin, search_param
from runcycles_server_lite.audit import audited
from runcycles_server_lite.errors import ProtocolError, invalid
from runcycles_server_lite.http import JSONResponse, read_json, request_ids
from runcycles_server_lite.models import parse
from runcycles_server_lite.services import Services, services

from . import bulk, security
from . import deliveries as dl
from . import subscriptions as subs
from .dispatcher import matches
from .models import ReplayRequest, SecurityConfig, WebhookCreate, WebhookUpdate

WEBHOOKS_READ = "webhooks:read"
WEBHOOKS_WRITE = "webhooks:write"
REPLAY_SCAN_LIMIT = 10_000
REPLAY_LOCK_MS = 60_000
_STATUSES = ("ACTIVE", "PAUSED", "DISABLED")


def _sid(request: Request) -> str:
    sid: str = request.path_params["subscription_id"]
    return sid


def _created(record: dict[str, str], secret: str) -> Response:
    return JSONResponse(
        {"subscription": subs.wire(record), "signing_secret": secret}, status_code=201
    )


async def _record_for(request: Request, permission: str) -> tuple[Services, dict[str, str]]:
    """Dual-auth lookup: the admin key sees any subscription, a tenant key only its own."""
    svc, principal = await caller(request, permission)
    tenant = None if principal.is_admin else principal.tenant
    return svc, await subs.get(svc.store, _sid(request), tenant)


def _time(raw: str | None, name: str) -> int | None:
    if raw is None or not str(raw).strip():
        return None
    try:
        dt = datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{name} must be an ISO 8601 date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


# -- create / list ----------------------------------------------------------------------------


async def admin_create(request: Request) -> Response:
    """POST /v1/admin/webhooks (createWebhookSubscription)."""
    svc = require_admin(request)
    tenant = request.query_params.get("tenant_id") or subs.SYSTEM
    req = parse(WebhookCreate, await read_json(request))
    record, secret = await subs.create(svc.store, tenant, req)
    return _created(record, secret)


async def tenant_create(request: Request) -> Response:
    """POST /v1/webhooks (createTenantWebhook)."""
    svc = services(request)
    principal = await svc.auth.tenant(request, WEBHOOKS_WRITE)
    req = parse(WebhookCreate, await read_json(request))
    record, secret = await subs.create(svc.store, principal.tenant, req)
    return _created(record, secret)


_SORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "url": field_key("url"),
    "tenant_id": field_key("tenant_id"),
    "status": field_key("status"),
    "consecutive_failures": lambda row: int(row.get("consecutive_failures") or 0),
}


def _filtered(request: Request, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    q = request.query_params
    status = q.get("status") or None
    if status is not None and status not in _STATUSES:
        raise invalid(f"status must be one of {', '.join(_STATUSES)}")
    event_type = q.get("event_type") or None
    if event_type is not None and not events.valid_event_type(event_type):
        raise invalid("event_type is not an EventType")
    found = subs.matching(rows, status=status, event_type=event_type, search=search_param(request))
    return [subs.wire(rec) for rec in found]


def _filters(request: Request, tenant: str | None) -> dict[str, Any]:
    q = request.query_params
    return {
        "t": tenant,
        "s": q.get("status"),
        "e": q.get("event_type"),
        "q": q.get("search"),
    }


async def admin_list(request: Request) -> Response:
    """GET /v1/admin/webhooks (listWebhookSubscriptions)."""
    svc = require_admin(request)
    tenant = request.query_params.get("tenant_id") or None
    owners = [tenant] if tenant else await subs.all_tenants(svc.store)
    rows = _filtered(request, await subs.list_for(svc.store, owners))
    return page(request, rows, _SORTS, _filters(request, tenant), "subscriptions")


async def tenant_list(request: Request) -> Response:
    """GET /v1/webhooks (listTenantWebhooks): a tenant key lists its own; the admin key
    names the tenant with ``tenant``."""
    svc, principal = await caller(request, WEBHOOKS_READ)
    given = request.query_params.get("tenant") or None
    if principal.is_admin:
        if given is None:
            raise invalid("tenant query parameter is required when using admin key authentication")
        tenant = given
    else:
        if given is not None and given != principal.tenant:
            raise ProtocolError("FORBIDDEN", "tenant parameter does not match the API key's tenant")
        tenant = principal.tenant
    rows = _filtered(request, await subs.list_for(svc.store, [tenant]))
    return page(request, rows, {}, _filters(request, tenant), "subscriptions")


# -- one subscription -------------------------------------------------------------------------


async def admin_get(request: Request) -> Response:
    svc = require_admin(request)
    return JSONResponse(subs.wire(await subs.get(svc.store, _sid(request))))


async def tenant_get(request: Request) -> Response:
    _, record = await _record_for(request, WEBHOOKS_READ)
    return JSONResponse(subs.wire(record))


async def _patch(request: Request, svc: Services, record: dict[str, str]) -> Response:
    req = parse(WebhookUpdate, await read_json(request))
    request_id, _ = request_ids(request)
    updated = await subs.update(svc.store, record, req, request_id=request_id)
    return JSONResponse(subs.wire(updated))


async def admin_patch(request: Request) -> Response:
    svc = require_admin(request)
    return await _patch(request, svc, await subs.get(svc.store, _sid(request)))


async def tenant_patch(request: Request) -> Response:
    svc, record = await _record_for(request, WEBHOOKS_WRITE)
    return await _patch(request, svc, record)


async def admin_delete(request: Request) -> Response:
    svc = require_admin(request)
    await subs.delete(svc.store, await subs.get(svc.store, _sid(request)))
    return Response(status_code=204)


async def tenant_delete(request: Request) -> Response:
    svc, record = await _record_for(request, WEBHOOKS_WRITE)
    await subs.delete(svc.store, record)
    return Response(status_code=204)


async def _test(svc: Services, record: dict[str, str]) -> Response:
    """Send one synthetic system.webhook_test event now (does not count as a failure)."""
    store = svc.store
    owner = record["tenant_id"]
    if owner != subs.SYSTEM:
        status = await store.redis.hget(store.keys.tenant(owner), "status")
        if status == "CLOSED":
            raise ProtocolError("TENANT_CLOSED", f"tenant {owner} is closed")
    body = events.envelope_body(
        "system.webhook_test",
        events.context(owner, source=events.SOURCE_ADMIN),
        data={
            "component": "webhook_dispatcher",
            "message": "test event",
            "severity": "info",
            "details": {"subscription_id": record["subscription_id"]},
        },
    )
    entry = await store.redis.xadd(store.keys.events(owner), {"e": body})
    raw = events.render(owner, str(entry), body)
    event = orjson.loads(raw)
    config = await security.load(store)
    async with httpx.AsyncClient(timeout=svc.settings.webhook_timeout_s) as client:
        attempt = await dl.send(client, record, raw, event, config, store.secret_box)
    out: dict[str, Any] = {
        "success": attempt.ok,
        "response_time_ms": attempt.elapsed_ms,
        "event_id": event["event_id"],
    }
    if attempt.status is not None:
        out["response_status"] = attempt.status
    if attempt.error:
        out["error_message"] = attempt.error
    return JSONResponse(out)


async def admin_test(request: Request) -> Response:
    svc = require_admin(request)
    return await _test(svc, await subs.get(svc.store, _sid(request)))


async def tenant_test(request: Request) -> Response:
    svc, record = await _record_for(request, WEBHOOKS_WRITE)
    return await _test(svc, record)


# -- delivery logs ----------------------------------------------------------------------------


async def _deliveries(request: Request, svc: Services, record: dict[str, str]) -> Response:
    store = svc.store
    owner, sid = record["tenant_id"], record["subscription_id"]
    q = request.query_params
    status = q.get("status") or None
    if status is not None and status not in dl.STATUSES:
        raise invalid(f"status must be one of {', '.join(dl.STATUSES)}")
    lo, hi = _time(q.get("from"), "from"), _time(q.get("to"), "to")
    if lo is not None and hi is not None and lo > hi:
        raise invalid("from must not be after to")
    ids: list[str] = await store.redis.zrevrangebyscore(
        dl.log_key(store, owner, sid), "+inf" if hi is None else hi, "-inf" if lo is None else lo
    )
    rows: list[dict[str, Any]] = []
    gone: list[str] = []
    for start in range(0, len(ids), 250):
        chunk = ids[start : start + 250]
        async with store.redis.pipeline(transaction=False) as pipe:
            for did in chunk:
                pipe.hgetall(dl.delivery_key(store, owner, did))
            recs: list[dict[str, str]] = await pipe.execute()
        for did, rec in zip(chunk, recs, strict=True):
            if not rec:
                gone.append(did)  # past delivery-log retention
            elif status is None or rec.get("status") == status:
                rows.append(dl.wire(rec))
    if gone:
        await store.redis.zrem(dl.log_key(store, owner, sid), *gone)
    return page(request, rows, {}, {"s": status, "lo": lo, "hi": hi, "id": sid}, "deliveries")


async def admin_deliveries(request: Request) -> Response:
    """GET /v1/admin/webhooks/{id}/deliveries (listWebhookDeliveries)."""
    svc = require_admin(request)
    return await _deliveries(request, svc, await subs.get(svc.store, _sid(request)))


async def tenant_deliveries(request: Request) -> Response:
    """GET /v1/webhooks/{id}/deliveries (listTenantWebhookDeliveries)."""
    svc, record = await _record_for(request, WEBHOOKS_READ)
    return await _deliveries(request, svc, record)


# -- replay -----------------------------------------------------------------------------------


async def replay(request: Request) -> Response:
    """POST /v1/admin/webhooks/{id}/replay (replayEvents): select every matching event of the
    window (or 400), queue one fresh delivery each, in event order; 202."""
    svc = require_admin(request)
    store = svc.store
    record = await subs.get(store, _sid(request))
    req = parse(ReplayRequest, await read_json(request))
    lo, hi = _time(req.from_, "from"), _time(req.to, "to")
    if lo is not None and hi is not None and lo > hi:
        raise invalid("from must not be after to")
    owner, sid = record["tenant_id"], record["subscription_id"]
    lock = f"{store.keys.tag(owner)}:webhook:{sid}:replay"
    token = secrets.token_hex(8)
    if not await store.redis.set(lock, token, nx=True, px=REPLAY_LOCK_MS):
        raise ProtocolError(
            "REPLAY_IN_PROGRESS", "a replay to this subscription is in progress", status=409
        )
    try:
        selected = await _select(svc, record, lo, hi, req)
        if len(selected) > req.max_events:
            raise invalid(
                f"the window holds {len(selected)} matching events, more than max_events "
                f"({req.max_events}); narrow from/to or raise max_events"
            )
        queued = 0
        if record.get("status") == "ACTIVE" and selected:
            now = await store.time_ms()
            async with store.redis.pipeline(transaction=True) as pipe:
                for entry_id, ev in selected:
                    rec = dl.new_record(record, ev, now, dl.new_delivery_id(entry_id))
                    dl.enqueue(pipe, store, owner, rec, now)
                    queued += 1
                await pipe.execute()
    finally:
        await store.run("unlock", [lock], [token])
    body = {
        "replay_id": "rpl_" + secrets.token_hex(12),
        "events_queued": queued,
        "estimated_completion_seconds": max(1, queued // 10),
    }
    return JSONResponse(body, status_code=202)


async def _select(
    svc: Services, record: dict[str, str], lo: int | None, hi: int | None, req: ReplayRequest
) -> list[tuple[str, dict[str, Any]]]:
    store = svc.store
    owner = record["tenant_id"]
    streams = [owner]
    if owner == subs.SYSTEM:
        streams += await store.redis.zrange(store.keys.tenants(), 0, -1)
    probe = {**record, "status": "ACTIVE"}
    wanted = set(req.event_types or [])
    scanned = 0
    out: list[tuple[int, int, str, str, dict[str, Any]]] = []
    window = events.stream_window(lo, hi)
    if window is None:
        return []
    for stream in streams:
        low, high = window
        while True:
            chunk = await store.redis.xrange(store.keys.events(stream), low, high, count=500)
            scanned += len(chunk)
            if scanned > REPLAY_SCAN_LIMIT:
                raise invalid(
                    f"the window holds more than {REPLAY_SCAN_LIMIT} events; narrow from/to"
                )
            for entry_id, fields in chunk:
                if not fields.get("e"):
                    continue
                ev = orjson.loads(events.render(stream, entry_id, fields["e"]))
                if wanted and ev.get("event_type") not in wanted:
                    continue
                if matches(probe, stream, ev):
                    ms, seq = events.entry_key(entry_id)
                    out.append((ms, seq, stream, entry_id, ev))
            if len(chunk) < 500:
                break
            low = "(" + chunk[-1][0]
    out.sort(key=lambda row: (row[0], row[1], row[2]))
    return [(row[3], row[4]) for row in out]


# -- security config --------------------------------------------------------------------------


async def get_security(request: Request) -> Response:
    svc = require_admin(request)
    return JSONResponse((await security.load(svc.store)).model_dump())


async def put_security(request: Request) -> Response:
    svc = require_admin(request)
    config = parse(SecurityConfig, await read_json(request))
    return JSONResponse((await security.save(svc.store, config)).model_dump())


def routes() -> list[BaseRoute]:
    """Both planes' webhook routes; mutations are audited under the spec's operation names."""

    def a(op: str, fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        return audited(op, "webhook")(fn)

    sub = "/{subscription_id}"
    return [
        Route("/v1/admin/webhooks", a("createWebhookSubscription", admin_create), methods=["POST"]),
        Route("/v1/admin/webhooks", admin_list, methods=["GET"]),
        Route(
            "/v1/admin/webhooks/bulk-action",
            a("bulkActionWebhooks", bulk.bulk_action),
            methods=["POST"],
        ),
        Route("/v1/admin/config/webhook-security", get_security, methods=["GET"]),
        Route(
            "/v1/admin/config/webhook-security",
            a("updateWebhookSecurityConfig", put_security),
            methods=["PUT"],
        ),
        Route(f"/v1/admin/webhooks{sub}", admin_get, methods=["GET"]),
        Route(
            f"/v1/admin/webhooks{sub}",
            a("updateWebhookSubscription", admin_patch),
            methods=["PATCH"],
        ),
        Route(
            f"/v1/admin/webhooks{sub}",
            a("deleteWebhookSubscription", admin_delete),
            methods=["DELETE"],
        ),
        Route(f"/v1/admin/webhooks{sub}/test", admin_test, methods=["POST"]),
        Route(f"/v1/admin/webhooks{sub}/deliveries", admin_deliveries, methods=["GET"]),
        Route(f"/v1/admin/webhooks{sub}/replay", a("replayEvents", replay), methods=["POST"]),
        Route("/v1/webhooks", a("createTenantWebhook", tenant_create), methods=["POST"]),
        Route("/v1/webhooks", tenant_list, methods=["GET"]),
        Route(f"/v1/webhooks{sub}", tenant_get, methods=["GET"]),
        Route(f"/v1/webhooks{sub}", a("updateTenantWebhook", tenant_patch), methods=["PATCH"]),
        Route(f"/v1/webhooks{sub}", a("deleteTenantWebhook", tenant_delete), methods=["DELETE"]),
        Route(f"/v1/webhooks{sub}/test", tenant_test, methods=["POST"]),
        Route(f"/v1/webhooks{sub}/deliveries", tenant_deliveries, methods=["GET"]),
    ]
