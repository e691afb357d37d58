"""Webhook subscription records: the one writer of their format, the two subscription
invariants, and their lifecycle events (each written in the same MULTI as the change).

Layout (see ``keys.py``; ``T`` is the owning tenant, ``__system__`` for system-wide ones)::

  P:{t:T}:webhooks             ZSET  subscription id by created_at ms
  P:{t:T}:webhook:<id>         HASH  subscription record (see FIELDS)
  P:webhook:owner:<id>         STRING owning tenant (calls that name only the id)
  P:webhooks:tenants           SET   tenants owning at least one subscription (dispatcher)

The signing secret is stored in the record (the dispatcher needs it to sign), sealed when a
key is configured (``sealing.py``), and is never rendered after the create response.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from runcycles_server_lite import events
from runcycles_server_lite.errors import ProtocolError, invalid
from runcycles_server_lite.provisioning import check_tenant_id
from runcycles_server_lite.store import Store

from . import sealing, security
from .models import RetryPolicy, WebhookCreate, WebhookUpdate

SYSTEM = events.SYSTEM_TENANT
DEFAULT_THRESHOLDS = (0.8, 0.95, 1.0)
MASK = "********"
_LIST_FIELDS = ("event_types", "event_categories")
_JSON_FIELDS = ("thresholds", "headers", "retry_policy", "metadata")


def index_key(store: Store, tenant: str) -> str:
    return f"{store.keys.tag(tenant)}:webhooks"


def record_key(store: Store, tenant: str, sid: str) -> str:
    return f"{store.keys.tag(tenant)}:webhook:{sid}"


def owner_key(store: Store, sid: str) -> str:
    return f"{store.keys.prefix}:webhook:owner:{sid}"


def tenants_key(store: Store) -> str:
    return f"{store.keys.prefix}:webhooks:tenants"


def cursor_key(store: Store, tenant: str) -> str:
    """Last event-stream entry the dispatcher has fanned out for ``tenant``."""
    return f"{store.keys.tag(tenant)}:events:dispatched"


# -- invariants -------------------------------------------------------------------------------


def check_selectors(tenant: str, event_types: Iterable[str], categories: Iterable[str]) -> None:
    """INVARIANT 1 (at least one selector) and INVARIANT 2 (a tenant-owned subscription
    selects only tenant-accessible types and categories): 400 INVALID_REQUEST otherwise."""
    types, cats = list(event_types), list(categories)
    if not types and not cats:
        raise invalid("at least one of event_types and event_categories must be non-empty")
    if tenant == SYSTEM:
        return
    for t in types:
        if events.category_of(t) not in events.TENANT_CATEGORIES:
            raise invalid(
                f"event type {t} is admin-only; a tenant-owned subscription may select only "
                "budget.*, reservation.* and tenant.* events",
                field="event_types",
            )
    for c in cats:
        if c not in events.TENANT_CATEGORIES:
            raise invalid(
                f"event category {c} is admin-only; a tenant-owned subscription may select "
                "only the budget, reservation and tenant categories",
                field="event_categories",
            )


# -- rendering --------------------------------------------------------------------------------


def _loads(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return default


def selectors(record: Mapping[str, str]) -> tuple[list[str], list[str]]:
    return _loads(record.get("event_types"), []), _loads(record.get("event_categories"), [])


def retry_policy(record: Mapping[str, str]) -> RetryPolicy:
    return RetryPolicy.model_validate(_loads(record.get("retry_policy"), {}))


def wire(record: Mapping[str, str]) -> dict[str, Any]:
    """A stored record as the spec's WebhookSubscription (no secret; header values masked)."""
    from runcycles_server_lite.admin.common import iso

    types, cats = selectors(record)
    out: dict[str, Any] = {
        "subscription_id": record["subscription_id"],
        "tenant_id": record["tenant_id"],
        "url": record.get("url", ""),
        "event_types": types,
        "status": record.get("status", "ACTIVE"),
        "created_at": iso(record.get("created_at")),
        "disable_after_failures": int(record.get("disable_after_failures") or 10),
        "consecutive_failures": int(record.get("consecutive_failures") or 0),
        "retry_policy": retry_policy(record).model_dump(),
    }
    if cats:
        out["event_categories"] = cats
    # description is kept but not read back: the spec's WebhookSubscription has no such
    # field (and forbids extra ones).
    for name in ("name", "scope_filter"):
        if record.get(name):
            out[name] = record[name]
    thresholds = _loads(record.get("thresholds"), None)
    if thresholds:
        out["thresholds"] = thresholds
    headers = _loads(record.get("headers"), None)
    if headers:
        out["headers"] = dict.fromkeys(headers, MASK)
    metadata = _loads(record.get("metadata"), None)
    if metadata:
        out["metadata"] = metadata
    for name in ("updated_at", "last_triggered_at", "last_success_at", "last_failure_at"):
        if record.get(name):
            out[name] = iso(record[name])
    return out


# -- reads ------------------------------------------------------------------------------------


async def find(store: Store, sid: str) -> dict[str, str] | None:
    """The record of subscription ``sid`` (any tenant), or None."""
    if not sid.startswith("whsub_") or len(sid) > 64:
        return None
    tenant = await store.redis.get(owner_key(store, sid))
    if not tenant:
        return None
    record: dict[str, str] = await store.redis.hgetall(record_key(store, str(tenant), sid))
    return record or None


async def get(store: Store, sid: str, tenant: str | None = None) -> dict[str, str]:
    """The record, 404 WEBHOOK_NOT_FOUND if unknown or (for a tenant caller) another tenant's."""
    record = await find(store, sid)
    if record is None or (tenant is not None and record.get("tenant_id") != tenant):
        raise ProtocolError("WEBHOOK_NOT_FOUND", f"webhook subscription {sid} not found")
    return record


async def list_for(store: Store, tenants: Iterable[str]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for tenant in tenants:
        ids: list[str] = await store.redis.zrange(index_key(store, tenant), 0, -1)
        if not ids:
            continue
        async with store.redis.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(record_key(store, tenant, sid))
            rows: list[dict[str, str]] = await pipe.execute()
        out += [r for r in rows if r]
    return out


def matching(
    rows: Iterable[dict[str, str]],
    *,
    status: str | None = None,
    event_type: str | None = None,
    search: str | None = None,
) -> list[dict[str, str]]:
    """The records that pass the listWebhookSubscriptions filters (AND; ``search`` is a
    lowercase substring of the id or URL), oldest first. The list routes and the bulk action
    share it, as the spec requires their filters to mean the same."""
    out = []
    for rec in sorted(rows, key=lambda r: (r.get("created_at", ""), r["subscription_id"])):
        if status is not None and rec.get("status") != status:
            continue
        if event_type is not None and event_type not in selectors(rec)[0]:
            continue
        hay = (rec["subscription_id"] + " " + rec.get("url", "")).lower()
        if search is not None and search not in hay:
            continue
        out.append(rec)
    return out


async def all_tenants(store: Store) -> list[str]:
    members: set[str] = await store.redis.smembers(tenants_key(store))
    return sorted(members)


# -- writes -----------------------------------------------------------------------------------


async def _owner_open(store: Store, tenant: str) -> None:
    if tenant == SYSTEM:
        return
    check_tenant_id(tenant)
    status = await store.redis.hget(store.keys.tenant(tenant), "status")
    if status is None:
        raise ProtocolError("TENANT_NOT_FOUND", f"tenant {tenant} not found")
    if status == "CLOSED":
        raise ProtocolError("TENANT_CLOSED", f"tenant {tenant} is closed")


def _lifecycle(
    record: Mapping[str, str],
    previous: str | None,
    new: str | None,
    changed: list[str] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "subscription_id": record["subscription_id"],
        "tenant_id": record["tenant_id"],
        "changed_fields": changed or [],
    }
    if previous is not None:
        data["previous_status"] = previous
    if new is not None:
        data["new_status"] = new
    if reason is not None:
        data["disable_reason"] = reason
    return data


async def _thresholds_union(store: Store, tenant: str, pipe: Any, extra: list[float]) -> None:
    """Keep the tenant's ``event_thresholds`` (read by the runtime scripts) the union of its
    subscriptions' budget_utilization thresholds and the defaults."""
    if tenant == SYSTEM:
        return
    values = set(DEFAULT_THRESHOLDS) | set(extra)
    for rec in await list_for(store, [tenant]):
        conf = _loads(rec.get("thresholds"), None) or {}
        values |= set(conf.get("budget_utilization") or [])
    pipe.hset(
        store.keys.tenant(tenant),
        "event_thresholds",
        ",".join(f"{v:g}" for v in sorted(values)),
    )


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


async def create(
    store: Store, tenant: str, req: WebhookCreate, *, source: str = events.SOURCE_ADMIN
) -> tuple[dict[str, str], str]:
    """Create a subscription owned by ``tenant``; returns (record, signing secret)."""
    await _owner_open(store, tenant)
    check_selectors(tenant, req.event_types, req.event_categories or [])
    await security.validate_url(store, req.url)
    now = await store.time_ms()
    sid = "whsub_" + uuid.uuid4().hex
    secret = req.signing_secret or "whsec_" + secrets.token_urlsafe(32)
    record: dict[str, str] = {
        "subscription_id": sid,
        "tenant_id": tenant,
        "url": req.url,
        "event_types": _dump(req.event_types),
        "event_categories": _dump(req.event_categories or []),
        "secret": sealing.seal(store.secret_box, secret, sid),
        "status": "ACTIVE",
        "disable_after_failures": str(req.disable_after_failures),
        "consecutive_failures": "0",
        "retry_policy": _dump((req.retry_policy or RetryPolicy()).model_dump()),
        "created_at": str(now),
        "updated_at": str(now),
    }
    for name in ("name", "description", "scope_filter"):
        value = getattr(req, name)
        if value:
            record[name] = value
    if req.thresholds is not None:
        record["thresholds"] = _dump(req.thresholds.model_dump(exclude_none=True))
    if req.headers:
        record["headers"] = _dump(req.headers)
    if req.metadata:
        record["metadata"] = _dump(req.metadata)
    last = await store.redis.xrevrange(store.keys.events(tenant), count=1)
    ctx = events.context(tenant, source=source)
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(record_key(store, tenant, sid), mapping=record)
        pipe.zadd(index_key(store, tenant), {sid: now})
        # New subscriptions receive events from now on (replay covers the past).
        pipe.set(cursor_key(store, tenant), last[0][0] if last else "0-0", nx=True)
        thresholds = (req.thresholds.budget_utilization if req.thresholds else None) or []
        await _thresholds_union(store, tenant, pipe, [float(t) for t in thresholds])
        events.xadd(
            pipe,
            store.keys.events(tenant),
            "webhook.created",
            ctx,
            data=_lifecycle(record, None, "ACTIVE"),
            correlation_id=f"webhook_create:{sid}",
        )
        await pipe.execute()
    await store.redis.set(owner_key(store, sid), tenant)
    await store.redis.sadd(tenants_key(store), tenant)
    return record, secret


async def update(
    store: Store,
    record: dict[str, str],
    req: WebhookUpdate,
    *,
    request_id: str = "",
    source: str = events.SOURCE_ADMIN,
) -> dict[str, str]:
    """Apply a partial update; emits exactly one event unless nothing changed."""
    tenant, sid = record["tenant_id"], record["subscription_id"]
    await _owner_open(store, tenant)
    given = req.model_dump(exclude_unset=True)
    types, cats = selectors(record)
    new_types = given.get("event_types", types)
    new_cats = given.get("event_categories", cats)
    if "event_types" in given or "event_categories" in given:
        check_selectors(tenant, new_types, new_cats or [])
    if "url" in given and given["url"] != record.get("url"):
        await security.validate_url(store, given["url"])
    changes: dict[str, str] = {}
    for name, value in given.items():
        if name == "status":
            continue
        if name == "signing_secret":
            field = "secret"
            try:
                same = sealing.open_secret(store.secret_box, record.get(field, ""), sid) == value
            except sealing.SecretUnavailable:
                same = False  # replacing a secret this server cannot open is allowed
            if not same:
                changes[field] = sealing.seal(store.secret_box, str(value), sid)
            continue
        if name in _LIST_FIELDS or name in _JSON_FIELDS:
            encoded, field = (
                _dump(value if value is not None else ([] if name in _LIST_FIELDS else {})),
                name,
            )
        else:
            encoded, field = ("" if value is None else str(value)), name
        if record.get(field, "") != encoded:
            changes[field] = encoded
    changed = sorted("signing_secret" if f == "secret" else f for f in changes)
    previous = record.get("status", "ACTIVE")
    status = given.get("status") or previous
    if status != previous:
        changes["status"] = status
        if status == "ACTIVE":
            changes["consecutive_failures"] = "0"
    if not changes:
        return record
    now = await store.time_ms()
    changes["updated_at"] = str(now)
    if status != previous:
        event_type = "webhook.paused" if status == "PAUSED" else "webhook.resumed"
    else:
        event_type = "webhook.updated"
    ctx = events.context(tenant, source=source)
    record = {**record, **changes}
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(record_key(store, tenant, sid), mapping=changes)
        if "thresholds" in changes:
            conf = given.get("thresholds") or {}
            await _thresholds_union(
                store, tenant, pipe, [float(x) for x in conf.get("budget_utilization") or []]
            )
        events.xadd(
            pipe,
            store.keys.events(tenant),
            event_type,
            ctx,
            data=_lifecycle(record, previous, status, changed),
            correlation_id=f"webhook_update:{sid}:{request_id}",
        )
        await pipe.execute()
    return record


async def delete(
    store: Store,
    record: Mapping[str, str],
    *,
    source: str = events.SOURCE_ADMIN,
    correlation_id: str | None = None,
) -> None:
    tenant, sid = record["tenant_id"], record["subscription_id"]
    await _owner_open(store, tenant)
    ctx = events.context(tenant, source=source)
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.delete(record_key(store, tenant, sid))
        pipe.zrem(index_key(store, tenant), sid)
        events.xadd(
            pipe,
            store.keys.events(tenant),
            "webhook.deleted",
            ctx,
            data=_lifecycle(record, record.get("status", "ACTIVE"), None),
            correlation_id=correlation_id or f"webhook_delete:{sid}",
        )
        await pipe.execute()
    await store.redis.delete(owner_key(store, sid))


async def set_status(
    store: Store,
    record: Mapping[str, str],
    status: str,
    event_type: str,
    *,
    reason: str | None = None,
    correlation_id: str | None = None,
    source: str = events.SOURCE_ADMIN,
    data: dict[str, Any] | None = None,
) -> None:
    """A status transition outside PATCH (auto-disable, cascade, bulk action)."""
    tenant, sid = record["tenant_id"], record["subscription_id"]
    now = await store.time_ms()
    ctx = events.context(tenant, source=source)
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(
            record_key(store, tenant, sid), mapping={"status": status, "updated_at": str(now)}
        )
        events.xadd(
            pipe,
            store.keys.events(tenant),
            event_type,
            ctx,
            data=data or _lifecycle(record, record.get("status", "ACTIVE"), status, reason=reason),
            correlation_id=correlation_id,
        )
        await pipe.execute()
