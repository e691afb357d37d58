"""Event-stream queries: ``GET /v1/admin/events``, ``GET /v1/admin/events/{event_id}`` and the
tenant's ``GET /v1/events`` (listEvents, getEvent, listTenantEvents).

Each tenant's events are one Redis Stream (see :mod:`events`), already in time order, so the
default (timestamp) order reads each stream from the cursor on, in chunks, only as far as the
page needs, and merges tenants by ``(entry id, tenant)``. Other sort keys read the whole
window and page by offset. A tenant key only ever reads its own stream, and only the
tenant-accessible categories (budget, reservation, tenant).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import events
from .admin.common import page, search_param
from .errors import ProtocolError, invalid
from .http import JSONResponse, raw_json_response
from .provisioning import check_tenant_id
from .services import services
from .store import Store

EVENTS_READ = "events:read"
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
_CHUNK = 200
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_SPACE_OFFSET = re.compile(r" (\d{2}:?\d{2})$")
SORT_FIELDS = ("event_type", "category", "scope", "tenant_id", "timestamp")

# (entry id, tenant, stored body, parsed body)
Row = tuple[str, str, str, dict[str, Any]]


@dataclass
class EventQuery:
    """The filters of one listing request (all AND-composed)."""

    tenants: list[str]
    exact: dict[str, str] = field(default_factory=dict)
    scope: str | None = None
    search: str | None = None
    lo: int | None = None
    hi: int | None = None
    categories: frozenset[str] | None = None

    def matches(self, ev: dict[str, Any]) -> bool:
        if self.categories is not None and ev.get("category") not in self.categories:
            return False
        if any(ev.get(k) != v for k, v in self.exact.items()):
            return False
        if self.scope is not None and not str(ev.get("scope", "")).startswith(self.scope):
            return False
        if self.search is not None:
            hay = (str(ev.get("correlation_id", "")), str(ev.get("scope", "")))
            if not any(self.search in h.lower() for h in hay):
                return False
        return True

    def binding(self, sort: str | None, direction: str) -> str:
        raw = orjson.dumps(
            [
                self.tenants if len(self.tenants) == 1 else "*",
                self.exact,
                self.scope,
                self.search,
                self.lo,
                self.hi,
                sort,
                direction,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(raw).hexdigest()[:16]


# -- parameters -------------------------------------------------------------------------------


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise invalid("limit must be an integer") from None
    if not 1 <= value <= MAX_LIMIT:
        raise invalid(f"limit must be between 1 and {MAX_LIMIT}")
    return value


def _time(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    raw = _SPACE_OFFSET.sub(r"+\1", raw)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(f"{name} must be an ISO 8601 date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _query(request: Request, tenants: list[str], categories: frozenset[str] | None) -> EventQuery:
    q = request.query_params
    exact: dict[str, str] = {}
    event_type = q.get("event_type") or None
    if event_type is not None:
        if not events.valid_event_type(event_type):
            raise invalid("event_type is not an EventType", event_type=event_type)
        exact["event_type"] = event_type
    category = q.get("category") or None
    if category is not None:
        if category not in events.CATEGORIES:
            raise invalid(f"category must be one of {', '.join(events.CATEGORIES)}")
        exact["category"] = category
    for name in ("correlation_id", "trace_id", "request_id"):
        value = q.get(name) or None
        if value is not None:
            exact[name] = value
    if "trace_id" in exact and not _TRACE_ID.match(exact["trace_id"]):
        raise invalid("trace_id must be 32 lowercase hex characters")
    lo, hi = _time(request, "from"), _time(request, "to")
    if lo is not None and hi is not None and lo > hi:
        raise invalid("from must not be after to")
    return EventQuery(
        tenants=tenants,
        exact=exact,
        scope=q.get("scope") or None,
        search=search_param(request),
        lo=lo,
        hi=hi,
        categories=categories,
    )


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _decode(raw: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise invalid("cursor is malformed") from None
    if not isinstance(data, dict):
        raise invalid("cursor is malformed")
    return data


# -- reading ----------------------------------------------------------------------------------


def _order(sid: str, tenant: str) -> tuple[int, int, str]:
    ms, seq = events.entry_key(sid)
    return ms, seq, tenant


async def _read(
    store: Store, tenant: str, q: EventQuery, desc: bool, start: str | None, want: int | None
) -> list[Row]:
    """Matching rows of one tenant's stream in page order, from ``start`` (an entry id,
    inclusive) or the window's edge; at most ``want`` (None = the whole window)."""
    key = store.keys.events(tenant)
    window = events.stream_window(q.lo, q.hi)
    if window is None:
        return []
    low, high = window
    if start is not None:
        if desc:
            high = start
        else:
            low = start
    out: list[Row] = []
    while True:
        if desc:
            chunk = await store.redis.xrevrange(key, high, low, count=_CHUNK)
        else:
            chunk = await store.redis.xrange(key, low, high, count=_CHUNK)
        for sid, fields in chunk:
            body = fields.get("e")
            if not body:
                continue
            ev = orjson.loads(body)
            if q.matches(ev):
                out.append((sid, tenant, body, ev))
                if want is not None and len(out) >= want:
                    return out
        if len(chunk) < _CHUNK:
            return out
        last = chunk[-1][0]
        if desc:
            high = "(" + last
        else:
            low = "(" + last


def _wire(row: Row) -> orjson.Fragment:
    sid, tenant, body, _ = row
    return orjson.Fragment(events.render(tenant, sid, body))


async def _list(request: Request, q: EventQuery) -> Response:
    store = services(request).store
    limit = _limit(request)
    params = request.query_params
    sort_by = params.get("sort_by") or None
    if sort_by is not None and sort_by not in SORT_FIELDS:
        raise invalid(f"sort_by must be one of {', '.join(SORT_FIELDS)}")
    sort_dir = params.get("sort_dir") or "desc"
    if sort_dir not in ("asc", "desc"):
        raise invalid("sort_dir must be asc or desc")
    desc = sort_dir == "desc"
    if sort_by is not None and sort_by != "timestamp":
        return await _list_sorted(request, store, q, sort_by)
    binding = q.binding("timestamp", sort_dir)
    after: tuple[int, int, str] | None = None
    start: str | None = None
    raw = params.get("cursor") or None
    if raw is not None:
        cur = _decode(raw)
        sid, tenant = cur.get("s"), cur.get("t")
        if cur.get("b") != binding:
            raise invalid("cursor was issued for a different filter or sort")
        if not isinstance(sid, str) or not isinstance(tenant, str):
            raise invalid("cursor is malformed")
        if not events.valid_entry_id(sid):
            raise invalid("cursor is malformed")
        try:
            after = _order(sid, tenant)
        except ValueError:
            raise invalid("cursor is malformed") from None
        start = sid
    rows: list[Row] = []
    for tenant in q.tenants:
        got = await _read(store, tenant, q, desc, start, limit + 2)
        if after is not None:
            bound = after

            def beyond(r: Row, bound: tuple[int, int, str] = bound) -> bool:
                key = _order(r[0], r[1])
                return key < bound if desc else key > bound

            got = [r for r in got if beyond(r)]
        rows += got
    rows.sort(key=lambda r: _order(r[0], r[1]), reverse=desc)
    page_rows = rows[:limit]
    body: dict[str, Any] = {
        "events": [_wire(r) for r in page_rows],
        "has_more": len(rows) > limit,
    }
    if len(rows) > limit:
        last = page_rows[-1]
        body["next_cursor"] = _encode({"b": binding, "s": last[0], "t": last[1]})
    return JSONResponse(body)


async def _list_sorted(request: Request, store: Store, q: EventQuery, sort_by: str) -> Response:
    """Non-time orders: the whole window, sorted (stable, newest first on ties), offset-paged."""
    rows: list[Row] = []
    for tenant in q.tenants:
        rows += await _read(store, tenant, q, True, None, None)
    rows.sort(key=lambda r: _order(r[0], r[1]), reverse=True)
    wire = [orjson.loads(events.render(t, sid, body)) for sid, t, body, _ in rows]

    def key(name: str) -> Callable[[dict[str, Any]], Any]:
        return lambda row: row.get(name) or ""

    filters = {"q": q.binding(None, "")}
    return page(request, wire, {name: key(name) for name in SORT_FIELDS}, filters, "events")


# -- handlers ---------------------------------------------------------------------------------


async def list_events(request: Request) -> Response:
    """GET /v1/admin/events (listEvents)."""
    svc = services(request)
    svc.auth.require_admin(request)
    tenant_id = request.query_params.get("tenant_id") or None
    if tenant_id is not None:
        if tenant_id != events.SYSTEM_TENANT:
            check_tenant_id(tenant_id)
        tenants = [tenant_id]
    else:
        tenants = [
            events.SYSTEM_TENANT,
            *await svc.store.redis.zrange(svc.store.keys.tenants(), 0, -1),
        ]
    return await _list(request, _query(request, tenants, None))


async def list_tenant_events(request: Request) -> Response:
    """GET /v1/events (listTenantEvents): the caller's tenant, tenant-accessible types only."""
    svc = services(request)
    principal = await svc.auth.tenant(request, EVENTS_READ)
    return await _list(request, _query(request, [principal.tenant], events.TENANT_CATEGORIES))


async def get_event(request: Request) -> Response:
    """GET /v1/admin/events/{event_id} (getEvent)."""
    svc = services(request)
    svc.auth.require_admin(request)
    raw_id: str = request.path_params["event_id"]
    parsed = events.parse_event_id(raw_id)
    if parsed is None:
        raise ProtocolError("EVENT_NOT_FOUND", "event not found")
    tenant, sid = parsed
    found = await svc.store.redis.xrange(svc.store.keys.events(tenant), sid, sid, count=1)
    if not found or not found[0][1].get("e"):
        raise ProtocolError("EVENT_NOT_FOUND", "event not found")
    return raw_json_response(events.render(tenant, sid, found[0][1]["e"]))


async def find_event(store: Store, event_id: str) -> bytes | None:
    """The wire JSON of one event, or None (used by the webhook test and replay paths)."""
    parsed = events.parse_event_id(event_id)
    if parsed is None:
        return None
    tenant, sid = parsed
    found = await store.redis.xrange(store.keys.events(tenant), sid, sid, count=1)
    if not found or not found[0][1].get("e"):
        return None
    return events.render(tenant, sid, found[0][1]["e"])


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/admin/events", list_events, methods=["GET"]),
        Route("/v1/admin/events/{event_id}", get_event, methods=["GET"]),
        Route("/v1/events", list_tenant_events, methods=["GET"]),
    ]
