"""Audit log of admin-plane mutations (the spec's AuditLogEntry), and its query endpoint.

Every create/update/fund/freeze/revoke call through the admin plane, successful or not, leaves
one entry. Entries live in the per-tenant ``audit`` ZSET of the *actor* (see ``keys.py``):
the calling tenant, or the spec's sentinels ``__admin__`` (admin key) and ``__unauth__``
(failed authentication), scored by time. Each ZSET keeps the newest :data:`AUDIT_KEEP`.

The entry is written after the mutation, not inside its script, so a crash between the two
can lose an entry (never the mutation). A failure to write an entry is logged and never
changes the response.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.exceptions as redis_errors
from starlette.requests import Request
from starlette.responses import Response

from .errors import ProtocolError, invalid
from .http import request_ids
from .services import services

log = logging.getLogger("runcycles_server_lite.audit")

AUDIT_KEEP = 10_000
ADMIN_ACTOR = "__admin__"
UNAUTHENTICATED = "__unauth__"

Handler = Callable[[Request], Awaitable[Response]]

_ID_FIELDS = ("key_id", "ledger_id", "policy_id", "tenant_id")


def _resource_id(request: Request, response: Response | None) -> str | None:
    # Set by a caller that names the resource elsewhere (the dashboard's form fields).
    named = request.scope.get("state", {}).get("audit_resource_id")
    if named:
        return str(named)
    if response is not None and response.status_code < 300:
        try:
            body = orjson.loads(bytes(response.body))
        except (orjson.JSONDecodeError, TypeError):
            body = None
        if isinstance(body, dict):
            for field in _ID_FIELDS:
                if isinstance(body.get(field), str):
                    return str(body[field])
    params = request.path_params
    for field in ("key_id", "policy_id", "tenant_id"):
        if field in params:
            return str(params[field])
    return request.query_params.get("scope")


def _actor(request: Request, status: int) -> tuple[str, str | None]:
    state = request.scope.get("state", {})
    if status == 401:
        return UNAUTHENTICATED, None
    if state.get("tenant"):
        return str(state["tenant"]), state.get("key_id")
    # A dashboard session signed in with the admin key carries no header (dashboard/auth.py).
    if request.headers.get("x-admin-api-key") is not None or state.get("admin"):
        return ADMIN_ACTOR, None
    return UNAUTHENTICATED, None


async def _record(
    request: Request,
    operation: str,
    resource_type: str,
    status: int,
    error_code: str | None,
    response: Response | None,
) -> None:
    from .admin.common import iso

    svc = services(request)
    tenant, key_id = _actor(request, status)
    request_id, trace_id = request_ids(request)
    try:
        now = await svc.store.time_ms()
        entry = {
            "log_id": "log_" + secrets.token_hex(8),
            "timestamp": iso(now),
            "tenant_id": tenant,
            "key_id": key_id,
            "user_agent": request.headers.get("user-agent"),
            "source_ip": request.client.host if request.client else None,
            "operation": operation,
            "resource_type": resource_type,
            "resource_id": _resource_id(request, response),
            "request_id": request_id,
            "trace_id": trace_id,
            "status": status,
            "error_code": error_code,
        }
        key = svc.store.keys.audit(tenant)
        async with svc.store.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {orjson.dumps({k: v for k, v in entry.items() if v is not None}): now})
            pipe.zremrangebyrank(key, 0, -(AUDIT_KEEP + 1))
            await pipe.execute()
    except Exception as exc:  # an audit failure must never change the answer
        log.warning("could not write audit entry for %s: %s", operation, exc)


def audited(operation: str, resource_type: str) -> Callable[[Handler], Handler]:
    """Wrap an admin handler so each call (success or failure) leaves an audit entry."""

    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                response = await fn(request)
            except ProtocolError as exc:
                await _record(request, operation, resource_type, exc.status, exc.code, None)
                raise
            except (redis_errors.ConnectionError, redis_errors.TimeoutError):
                raise  # the store is down: nowhere to write the entry
            except Exception:
                await _record(request, operation, resource_type, 500, "INTERNAL_ERROR", None)
                raise
            await _record(request, operation, resource_type, response.status_code, None, response)
            return response

        handler.__name__ = getattr(fn, "__name__", operation)
        handler.__doc__ = fn.__doc__
        return handler

    return wrap


def _int_param(request: Request, name: str, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo} and {hi}")
    return value


def _time_param(request: Request, name: str) -> int | None:
    from datetime import datetime, timezone

    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{name} must be an ISO-8601 date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


async def list_audit_logs(request: Request) -> Response:
    """GET /v1/admin/audit/logs: filtered, newest first, cursor-paged."""
    from .admin.common import contains, field_key, page, search_param

    svc = services(request)
    svc.auth.require_admin(request)
    q = request.query_params
    lo = _time_param(request, "from")
    hi = _time_param(request, "to")
    status_min = _int_param(request, "status_min", 100, 599)
    status_max = _int_param(request, "status_max", 100, 599)
    status = _int_param(request, "status", 100, 599)
    search = search_param(request)
    exact = {
        f: q.get(f) or None
        for f in (
            "tenant_id",
            "key_id",
            "operation",
            "resource_type",
            "resource_id",
            "error_code",
            "trace_id",
            "request_id",
        )
    }
    excluded = {c for c in (q.get("error_code_exclude") or "").split(",") if c}
    if exact["tenant_id"]:
        actors = [exact["tenant_id"]]
    else:
        actors = [
            ADMIN_ACTOR,
            UNAUTHENTICATED,
            *await svc.store.redis.zrange(svc.store.keys.tenants(), 0, -1),
        ]
    rows: list[dict[str, Any]] = []
    for actor in actors:
        raw: list[str] = await svc.store.redis.zrangebyscore(
            svc.store.keys.audit(actor),
            "-inf" if lo is None else lo,
            "+inf" if hi is None else hi,
        )
        for item in raw:
            entry = orjson.loads(item)
            if (
                all(v is None or entry.get(f) == v for f, v in exact.items())
                and entry.get("error_code") not in excluded
                and (status is None or entry["status"] == status)
                and (status_min is None or entry["status"] >= status_min)
                and (status_max is None or entry["status"] <= status_max)
                and contains(
                    search,
                    entry.get("operation"),
                    entry.get("resource_id"),
                    entry.get("tenant_id"),
                    entry.get("error_code"),
                )
            ):
                rows.append(entry)
    rows.sort(key=lambda e: (e["timestamp"], e["log_id"]), reverse=True)
    sort_keys = {
        name: field_key(name)
        for name in ("timestamp", "tenant_id", "operation", "status", "resource_type")
    }
    filters: dict[str, Any] = {**exact, "from": lo, "to": hi, "search": search, "status": status}
    filters |= {"smin": status_min, "smax": status_max, "excl": sorted(excluded)}
    return page(request, rows, sort_keys, filters, "logs")
