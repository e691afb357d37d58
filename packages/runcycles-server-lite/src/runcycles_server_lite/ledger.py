"""The runtime hot path's store calls: the KEYS/ARGV contract of ``reserve.lua`` and
``commit.lua`` in one place.

The HTTP handlers (runtime.py) and the benchmark's raw-script loop both build their calls
here, so the positional layout each script documents in its header exists once on the
Python side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .keys import UNITS, Keys
from .store import Store

UNITS_CSV = ",".join(UNITS)
# Idempotency records of non-persisting evaluations (dry run, decide).
EVALUATION_IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Reserve:
    """One reserve (live or dry run), already validated; JSON fields already encoded."""

    tenant: str
    reservation_id: str
    idempotency_key: str
    payload_hash: str
    amount: int
    unit: str
    scopes: Sequence[str]  # derived scopes, tenant -> leaf
    subject_json: str
    action_json: str
    metadata_json: str  # "" when absent
    event_context: str  # events.context(tenant)
    idempotency_ms: int
    ttl_ms: int | None = None
    grace_ms: int = 0
    overage_policy: str | None = None
    dry_run: bool = False


def reserve_call(k: Keys, r: Reserve) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) for ``reserve.lua`` (layout in the script's header)."""
    t = r.tenant
    keys = [
        k.tenant(t),
        k.idempotency(t, "reserve", r.idempotency_key),
        k.reservation(t, r.reservation_id),
        k.reservation_index(t),
        k.reservation_expiry(t),
        k.budgets(t),
        *(k.budget(t, s, r.unit) for s in r.scopes),
        k.events(t),
    ]
    args = [
        "dry" if r.dry_run else "live",
        t,
        r.reservation_id,
        r.idempotency_key,
        r.payload_hash,
        str(r.amount),
        r.unit,
        "" if r.ttl_ms is None else str(r.ttl_ms),
        str(r.grace_ms),
        r.overage_policy or "",
        r.subject_json,
        r.action_json,
        r.metadata_json,
        str(r.idempotency_ms),
        str(EVALUATION_IDEMPOTENCY_TTL_MS),
        UNITS_CSV,
        str(len(r.scopes)),
        *r.scopes,
        r.event_context,
    ]
    return keys, args


async def reserve(store: Store, r: Reserve) -> Any:
    """Run ``reserve.lua``; the script's raw reply (see lib.lua's return convention)."""
    keys, args = reserve_call(store.keys, r)
    return await store.run("reserve", keys, args)


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit of an ACTIVE reservation, already validated; JSON fields encoded."""

    tenant: str  # the reservation's owner (its keys live in this tenant's slot)
    caller_tenant: str  # the API key's tenant (the script checks ownership)
    reservation_id: str
    idempotency_key: str
    payload_hash: str
    amount: int
    unit: str
    metrics_json: str
    metadata_json: str
    event_context: str
    retention_ms: int
    idempotency_ms: int


def commit_call(k: Keys, c: Commit) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) for ``commit.lua`` (layout in the script's header)."""
    t = c.tenant
    keys = [
        k.tenant(t),
        k.reservation(t, c.reservation_id),
        k.reservation_expiry(t),
        k.idempotency(t, "commit", c.idempotency_key),
        k.events(t),
    ]
    args = [
        c.caller_tenant,
        str(c.amount),
        c.unit,
        c.idempotency_key,
        c.payload_hash,
        c.metrics_json,
        c.metadata_json,
        str(c.retention_ms),
        str(c.idempotency_ms),
        c.event_context,
    ]
    return keys, args


async def commit(store: Store, c: Commit) -> Any:
    """Run ``commit.lua``; the script's raw reply."""
    keys, args = commit_call(store.keys, c)
    return await store.run("commit", keys, args)
