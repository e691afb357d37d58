"""Governance events: the admin spec's ``Event`` envelope, stored per tenant in a Redis Stream.

A mutation's events are written by the script that performs the mutation (``emit`` in
``scripts/lib.lua``): the stream is the script's last key and the envelope context (tenant,
source, actor, request and trace ids) its last argument, rendered here by :func:`context`.
Events of writes that are not scripts (API keys) go into the same MULTI as the write
(:func:`xadd`). Either way an acknowledged mutation never lacks its event.

Entries hold one field ``e``: the envelope without ``event_id`` and ``timestamp``. Both come
from the entry id (``<ms>-<seq>``, assigned by Redis from its own clock, unique and ordered
per tenant): ``event_id`` is ``evt_<tenant>_<ms>-<seq>``, so a lookup by id needs no index,
and ``timestamp`` is the id's milliseconds. Retention trims by entry id (``XTRIM MINID``).
"""

from __future__ import annotations

import contextvars
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from .logs import request_context

SYSTEM_TENANT = "__system__"
SOURCE_SERVER = "cycles-server"
SOURCE_ADMIN = "cycles-admin"
SOURCE_SWEEPER = "expiry-sweeper"
SOURCE_DISPATCHER = "webhook-dispatcher"

CATEGORIES: tuple[str, ...] = (
    "budget",
    "tenant",
    "api_key",
    "policy",
    "reservation",
    "system",
    "webhook",
)
# Categories a tenant may read (GET /v1/events) and subscribe to on its own.
TENANT_CATEGORIES: frozenset[str] = frozenset({"budget", "reservation", "tenant"})

EVENT_TYPES: tuple[str, ...] = (
    "budget.created",
    "budget.updated",
    "budget.funded",
    "budget.debited",
    "budget.reset",
    "budget.reset_spent",
    "budget.debt_repaid",
    "budget.frozen",
    "budget.unfrozen",
    "budget.closed",
    "budget.closed_via_tenant_cascade",
    "budget.threshold_crossed",
    "budget.exhausted",
    "budget.over_limit_entered",
    "budget.over_limit_exited",
    "budget.debt_incurred",
    "budget.burn_rate_anomaly",
    "reservation.denied",
    "reservation.denial_rate_spike",
    "reservation.expired",
    "reservation.expiry_rate_spike",
    "reservation.commit_overage",
    "reservation.released_via_tenant_cascade",
    "tenant.created",
    "tenant.updated",
    "tenant.suspended",
    "tenant.reactivated",
    "tenant.closed",
    "tenant.settings_changed",
    "webhook.created",
    "webhook.updated",
    "webhook.paused",
    "webhook.resumed",
    "webhook.disabled",
    "webhook.deleted",
    "webhook.disabled_via_tenant_cascade",
    "api_key.created",
    "api_key.revoked",
    "api_key.revoked_via_tenant_cascade",
    "api_key.expired",
    "api_key.permissions_changed",
    "api_key.auth_failed",
    "api_key.auth_failure_rate_spike",
    "policy.created",
    "policy.updated",
    "policy.deleted",
    "system.store_connection_lost",
    "system.store_connection_restored",
    "system.high_latency",
    "system.webhook_delivery_failed",
    "system.webhook_test",
)
EVENT_TYPE_SET = frozenset(EVENT_TYPES)

_EVENT_ID = re.compile(r"^evt_([a-z0-9_-]{1,64})_(\d{1,20})-(\d{1,20})$")


def valid_event_type(value: str) -> bool:
    """A known EventType, or a ``custom.`` one (the spec's extension rule)."""
    return value in EVENT_TYPE_SET or (value.startswith("custom.") and len(value) > 7)


def category_of(event_type: str) -> str:
    return event_type.partition(".")[0]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused the events of the current request (the envelope's ``actor``)."""

    type: str
    key_id: str | None = None
    source_ip: str | None = None

    def wire(self) -> dict[str, str]:
        out = {"type": self.type}
        if self.key_id:
            out["key_id"] = self.key_id
        if self.source_ip:
            out["source_ip"] = self.source_ip
        return out


SYSTEM_ACTOR = Actor("system")

# Set by authentication for the rest of the request (a fresh context per ASGI request).
current_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar(
    "runcycles_event_actor", default=None
)


def set_actor(actor: Actor) -> None:
    current_actor.set(actor)


def context(
    tenant: str,
    *,
    source: str = SOURCE_SERVER,
    actor: Actor | None = None,
    trace_id: str | None = None,
) -> str:
    """The envelope fields shared by every event of one call, as a JSON object's inside
    (``"tenant_id":...,"source":...,...``) for ``emit`` in lib.lua to splice in.

    request_id and trace_id come from the current request; outside one (sweeper, dispatcher)
    a fresh trace id is used, since conformant servers populate it on every event.
    """
    ids = request_context.get()
    who = actor or current_actor.get() or SYSTEM_ACTOR
    body: dict[str, Any] = {"tenant_id": tenant, "source": source, "actor": who.wire()}
    if ids and ids[0]:
        body["request_id"] = ids[0]
    body["trace_id"] = trace_id or (ids[1] if ids and ids[1] else secrets.token_hex(16))
    return orjson.dumps(body).decode()[1:-1]


def envelope_body(
    event_type: str,
    ctx: str,
    *,
    scope: str | None = None,
    data: dict[str, Any] | None = None,
    correlation_id: str | None = None,
) -> str:
    """The stored form of an event built in Python (same layout ``emit`` writes)."""
    head: dict[str, Any] = {"event_type": event_type, "category": category_of(event_type)}
    if scope:
        head["scope"] = scope
    if correlation_id:
        head["correlation_id"] = correlation_id
    text = orjson.dumps(head).decode()[:-1] + "," + ctx
    if data is not None:
        text += ',"data":' + orjson.dumps(data).decode()
    return text + "}"


def xadd(
    pipe: Any,
    stream: str,
    event_type: str,
    ctx: str,
    *,
    scope: str | None = None,
    data: dict[str, Any] | None = None,
    correlation_id: str | None = None,
) -> None:
    """Queue one event on ``pipe`` (use a transactional pipeline with the mutation)."""
    body = envelope_body(event_type, ctx, scope=scope, data=data, correlation_id=correlation_id)
    pipe.xadd(stream, {"e": body})


# -- ids and rendering -----------------------------------------------------------------------


def event_id(tenant: str, entry_id: str) -> str:
    return f"evt_{tenant}_{entry_id}"


# Redis stream entry ids are two unsigned 64-bit parts; a larger one is a Redis error.
_MAX_PART = 2**64 - 1
_ENTRY_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")


def valid_entry_id(value: str) -> bool:
    """``value`` is a stream entry id Redis accepts (``<ms>-<seq>``, each a u64)."""
    m = _ENTRY_ID.match(value)
    if m is None:
        return False
    return int(m.group(1)) <= _MAX_PART and int(m.group(2)) <= _MAX_PART


def stream_window(lo: int | None, hi: int | None) -> tuple[str, str] | None:
    """XRANGE bounds of the millisecond window [lo, hi] (None = open), or None when it holds
    no entry id at all (it ends before the epoch): Redis rejects negative ids."""
    if hi is not None and hi < 0:
        return None
    low = "-" if lo is None else str(max(lo, 0))
    return low, ("+" if hi is None else str(hi))


def parse_event_id(value: str) -> tuple[str, str] | None:
    """(tenant, stream entry id) of one of our event ids, or None."""
    m = _EVENT_ID.match(value)
    if not m:
        return None
    entry = f"{m.group(2)}-{m.group(3)}"
    return (m.group(1), entry) if valid_entry_id(entry) else None


def entry_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def iso_ms(ms: int) -> str:
    from .admin.common import iso

    text = iso(ms)
    assert text is not None
    return text


def render(tenant: str, entry_id: str, body: str) -> bytes:
    """The wire Event (raw JSON bytes) of one stream entry: the stored body with
    ``event_id`` and ``timestamp`` prepended. Deterministic, so a re-delivery of the same
    event is byte-identical (and so is its signature)."""
    stamp = iso_ms(entry_ms(entry_id))
    head = f'{{"event_id":"{event_id(tenant, entry_id)}","timestamp":"{stamp}",'
    return (head + body[1:]).encode()
