"""Storage-level provisioning: tenants, API keys and budgets as records in Redis.

The admin HTTP plane validates wire payloads and calls these; tests and the CLI use them too,
so there is exactly one writer of each record format (see ``keys.py`` for the layout).
Timestamps are Redis TIME epoch milliseconds, stored as decimal strings.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import events
from .auth import DEFAULT_PERMISSIONS
from .errors import ProtocolError, invalid
from .keys import SUBJECT_LEVELS, UNITS, secret_digest
from .store import Store

TENANT_ID = re.compile(r"^[a-z0-9-]{1,64}$")
SCOPE_VALUE = re.compile(r"^[a-z0-9_.-]{1,128}$")
INT64_MAX = 2**63 - 1
OVERAGE_POLICIES = ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT")

DEFAULT_MAX_RESERVATION_TTL_MS = 3_600_000
DEFAULT_MAX_RESERVATION_EXTENSIONS = 10
API_KEY_PREFIX = "cyc_live_"
API_KEY_LOOKUP_PREFIX_LEN = 14
DEFAULT_KEY_LIFETIME_MS = 90 * 24 * 3600 * 1000


def check_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID.match(tenant_id):
        raise invalid("tenant_id must match ^[a-z0-9-]+$ (1-64 characters)", tenant_id=tenant_id)
    return tenant_id


def normalize_scope(scope: str, tenant_id: str) -> str:
    """Canonical scope path (lowercase, canonical level order) that must begin with
    ``tenant:<tenant_id>``; 400 INVALID_REQUEST otherwise."""
    if not isinstance(scope, str) or not scope:
        raise invalid("scope is required")
    segments = scope.strip().lower().split("/")
    last_level = -1
    out = []
    for seg in segments:
        level, sep, value = seg.partition(":")
        if not sep or level not in SUBJECT_LEVELS or not SCOPE_VALUE.match(value):
            raise invalid(
                f"invalid scope segment {seg!r}: expected level:value with level in "
                f"{', '.join(SUBJECT_LEVELS)} and value matching [a-z0-9_.-]{{1,128}}",
                scope=scope,
            )
        idx = SUBJECT_LEVELS.index(level)
        if idx <= last_level:
            raise invalid("scope levels must appear once each, in canonical order", scope=scope)
        last_level = idx
        out.append(f"{level}:{value}")
    if out[0] != f"tenant:{tenant_id}":
        raise invalid(f"scope must start with tenant:{tenant_id}", scope=scope)
    return "/".join(out)


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise invalid(f"unit must be one of {', '.join(UNITS)}", unit=unit)
    return unit


def check_amount(value: Any, name: str) -> int:
    # bool is an int subclass; a JSON true must not become 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise invalid(f"{name} must be an integer between 0 and {INT64_MAX}", field=name)
    amount: int = value
    return amount


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _script_ok(reply: list[Any]) -> list[Any]:
    """The payload of an admin script's reply, or the ProtocolError it reported."""
    if reply and reply[0] == "ERR":
        code, message = str(reply[1]), str(reply[2])
        if code == "INVALID_TRANSITION":
            # Not an ErrorCode of its own: a state conflict reported as 409 INVALID_REQUEST.
            raise ProtocolError("INVALID_REQUEST", message, status=409)
        raise ProtocolError(code, message)
    return reply[1:]


def _ctx(tenant_id: str) -> str:
    return events.context(tenant_id, source=events.SOURCE_ADMIN)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new API key: the record as stored, plus the secret (returned once, never stored)."""

    key_id: str
    secret: str
    record: dict[str, str]


async def create_tenant(
    store: Store,
    tenant_id: str,
    name: str,
    *,
    default_commit_overage_policy: str | None = None,
    default_reservation_ttl_ms: int | None = None,
    max_reservation_ttl_ms: int | None = None,
    max_reservation_extensions: int | None = None,
    reservation_expiry_policy: str | None = None,
    parent_tenant_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[dict[str, str], bool]:
    """Create a tenant, or return the existing record. Returns (record, created)."""
    check_tenant_id(tenant_id)
    now = await store.time_ms()
    record: dict[str, str] = {
        "tenant_id": tenant_id,
        "name": name,
        "status": "ACTIVE",
        "max_reservation_ttl_ms": str(max_reservation_ttl_ms or DEFAULT_MAX_RESERVATION_TTL_MS),
        "max_reservation_extensions": str(
            DEFAULT_MAX_RESERVATION_EXTENSIONS
            if max_reservation_extensions is None
            else max_reservation_extensions
        ),
        "reservation_expiry_policy": reservation_expiry_policy or "AUTO_RELEASE",
        "metadata_json": _json(dict(metadata or {})),
        "created_at": str(now),
        "updated_at": str(now),
    }
    if default_commit_overage_policy is not None:
        if default_commit_overage_policy not in OVERAGE_POLICIES:
            raise invalid("default_commit_overage_policy is not a CommitOveragePolicy")
        record["default_commit_overage_policy"] = default_commit_overage_policy
    if default_reservation_ttl_ms is not None:
        record["default_reservation_ttl_ms"] = str(default_reservation_ttl_ms)
    if parent_tenant_id is not None:
        record["parent_tenant_id"] = parent_tenant_id
    if (
        default_reservation_ttl_ms is not None
        and int(record["max_reservation_ttl_ms"]) < default_reservation_ttl_ms
    ):
        raise invalid("default_reservation_ttl_ms must not exceed max_reservation_ttl_ms")
    args: list[str] = []
    for field, value in record.items():
        args += [field, value]
    # One script creates the whole record or reports the existing one: a tenant is never
    # visible half-written.
    reply = await store.run(
        "tenant_create",
        [store.keys.tenant(tenant_id), store.keys.events(tenant_id)],
        [*args, _ctx(tenant_id)],
    )
    created = int(reply[0]) == 1
    existing = record if created else _pairs(reply[1:])
    # NX keeps the original creation time when this repairs an interrupted create.
    await store.redis.zadd(
        store.keys.tenants(), {tenant_id: int(existing.get("created_at") or now)}, nx=True
    )
    return existing, created


async def get_tenant(store: Store, tenant_id: str) -> dict[str, str] | None:
    record: dict[str, str] = await store.redis.hgetall(store.keys.tenant(tenant_id))
    return record or None


async def create_api_key(
    store: Store,
    tenant_id: str,
    name: str,
    *,
    permissions: Iterable[str] | None = None,
    description: str | None = None,
    expires_at_ms: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    scope_filter: Iterable[str] | None = None,
) -> CreatedKey:
    """Mint a key for an existing tenant. The secret is returned here and never stored.

    404 TENANT_NOT_FOUND for an unknown tenant, 409 TENANT_CLOSED for a closed one."""
    tenant = await get_tenant(store, tenant_id)
    if tenant is None:
        raise ProtocolError("TENANT_NOT_FOUND", f"tenant {tenant_id} not found")
    if tenant.get("status") == "CLOSED":
        raise ProtocolError("TENANT_CLOSED", f"tenant {tenant_id} is closed")
    now = await store.time_ms()
    key_id = "key_" + uuid.uuid4().hex
    secret = API_KEY_PREFIX + secrets.token_urlsafe(24)
    record = {
        "key_id": key_id,
        "tenant_id": tenant_id,
        "key_prefix": secret[:API_KEY_LOOKUP_PREFIX_LEN],
        "key_hash": secret_digest(secret),
        "name": name,
        # An explicit empty list means no permissions, not the defaults.
        "permissions_json": _json(
            list(DEFAULT_PERMISSIONS if permissions is None else permissions)
        ),
        "status": "ACTIVE",
        "created_at": str(now),
        "expires_at": str(
            expires_at_ms if expires_at_ms is not None else now + DEFAULT_KEY_LIFETIME_MS
        ),
        "metadata_json": _json(dict(metadata or {})),
    }
    if description is not None:
        record["description"] = description
    if scope_filter is not None:
        record["scope_filter_json"] = _json(list(scope_filter))
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(store.keys.api_key(tenant_id, key_id), mapping=record)
        pipe.zadd(store.keys.api_keys(tenant_id), {key_id: now})
        events.xadd(
            pipe,
            store.keys.events(tenant_id),
            "api_key.created",
            _ctx(tenant_id),
            data=_key_event(record, None, "ACTIVE"),
        )
        await pipe.execute()
    await store.redis.set(store.keys.api_key_owner(key_id), tenant_id)
    # The lookup lives in another slot; written last so a key is never resolvable before
    # its record exists.
    await store.redis.set(store.keys.api_key_lookup(record["key_hash"]), f"{tenant_id}\n{key_id}")
    return CreatedKey(key_id=key_id, secret=secret, record=record)


async def revoke_api_key(
    store: Store, tenant_id: str, key_id: str, reason: str | None = None, *, cascade: bool = False
) -> dict[str, str]:
    key = store.keys.api_key(tenant_id, key_id)
    record: dict[str, str] = await store.redis.hgetall(key)
    if not record:
        raise ProtocolError("NOT_FOUND", f"API key {key_id} not found")
    if record.get("status") == "REVOKED":
        raise ProtocolError("INVALID_REQUEST", f"API key {key_id} is already revoked", status=409)
    now = await store.time_ms()
    update = {"status": "REVOKED", "revoked_at": str(now)}
    if reason:
        update["revoked_reason"] = reason
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=update)
        if cascade:
            data: dict[str, Any] = {
                "key_id": key_id,
                "prior_status": record.get("status", "ACTIVE"),
                "new_status": "REVOKED",
                "cascade_reason": "tenant_closed",
            }
            if record.get("name"):
                data["name"] = record["name"]
        else:
            data = _key_event(record, record.get("status", "ACTIVE"), "REVOKED")
        events.xadd(
            pipe,
            store.keys.events(tenant_id),
            "api_key.revoked_via_tenant_cascade" if cascade else "api_key.revoked",
            _ctx(tenant_id),
            data=data,
        )
        await pipe.execute()
    await store.redis.delete(store.keys.api_key_lookup(record["key_hash"]))
    record.update(update)
    return record


CASCADE_REASON = "tenant closed"


def _key_event(record: Mapping[str, str], previous: str | None, new: str) -> dict[str, Any]:
    """EventDataApiKey for a key record (never the secret or its hash)."""
    try:
        permissions = orjson.loads(record.get("permissions_json") or "[]")
    except orjson.JSONDecodeError:
        permissions = []
    data: dict[str, Any] = {"key_id": record["key_id"], "new_status": new}
    if record.get("name"):
        data["key_name"] = record["name"]
    if previous is not None:
        data["previous_status"] = previous
    data["permissions"] = permissions
    return data


async def create_budget(
    store: Store,
    tenant_id: str,
    scope: str,
    unit: str,
    allocated: int,
    *,
    overdraft_limit: int = 0,
    commit_overage_policy: str | None = None,
    rollover_policy: str | None = None,
    caps: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    period_start_ms: int | None = None,
    period_end_ms: int | None = None,
) -> dict[str, str]:
    """Create a budget ledger for (scope, unit) in one script: 404 TENANT_NOT_FOUND,
    409 TENANT_CLOSED / TENANT_SUSPENDED, 409 DUPLICATE_RESOURCE if it exists."""
    scope = normalize_scope(scope, tenant_id)
    check_unit(unit)
    check_amount(allocated, "allocated")
    check_amount(overdraft_limit, "overdraft_limit")
    if commit_overage_policy is not None and commit_overage_policy not in OVERAGE_POLICIES:
        raise invalid("commit_overage_policy is not a CommitOveragePolicy")
    now = await store.time_ms()
    record = {
        "ledger_id": "ldg_" + uuid.uuid4().hex,
        "tenant_id": tenant_id,
        "scope": scope,
        "unit": unit,
        "allocated": str(allocated),
        "remaining": str(allocated),
        "reserved": "0",
        "spent": "0",
        "debt": "0",
        "overdraft_limit": str(overdraft_limit),
        "is_over_limit": "false",
        "status": "ACTIVE",
        "rollover_policy": rollover_policy or "NONE",
        "metadata_json": _json(dict(metadata or {})),
        "created_at": str(now),
        "updated_at": str(now),
    }
    if commit_overage_policy is not None:
        record["commit_overage_policy"] = commit_overage_policy
    if caps:
        record["caps_json"] = _json(dict(caps))
    if period_start_ms is not None:
        record["period_start"] = str(period_start_ms)
    if period_end_ms is not None:
        record["period_end"] = str(period_end_ms)
    args = [f"{scope}|{unit}"]
    for field, value in record.items():
        args += [field, value]
    keys = [
        store.keys.tenant(tenant_id),
        store.keys.budget(tenant_id, scope, unit),
        store.keys.budgets(tenant_id),
        store.keys.events(tenant_id),
    ]
    _script_ok(await store.run("budget_create", keys, [*args, _ctx(tenant_id)]))
    return record


async def get_budget(store: Store, tenant_id: str, scope: str, unit: str) -> dict[str, str] | None:
    record: dict[str, str] = await store.redis.hgetall(
        store.keys.budget(tenant_id, normalize_scope(scope, tenant_id), unit)
    )
    return record or None


# -- tenants ---------------------------------------------------------------------------------
async def update_tenant(
    store: Store, tenant_id: str, fields: Mapping[str, str], status: str | None = None
) -> tuple[dict[str, str], str]:
    """Apply a PATCH (already validated and encoded as record fields) and a status change.

    Returns (record after the update, status before it). 404 TENANT_NOT_FOUND, 409
    TENANT_CLOSED for any change to a closed tenant except re-closing it."""
    now = await store.time_ms()
    args: list[str] = [str(now), status or ""]
    for field, value in fields.items():
        args += [field, value]
    out = _script_ok(
        await store.run(
            "tenant_update",
            [store.keys.tenant(tenant_id), store.keys.events(tenant_id)],
            [*args, _ctx(tenant_id)],
        )
    )
    return _pairs(out[1:]), str(out[0])


async def close_tenant_cascade(store: Store, tenant_id: str) -> list[dict[str, str]]:
    """Drive a closed tenant's objects to their terminal states: budgets CLOSED (their
    ``reserved`` returned to ``remaining``), keys REVOKED.

    Call it only after the tenant itself is CLOSED: from then on its reservations can neither
    settle nor be refunded by expiry, so draining here returns each hold exactly once (the
    reference drains too but its expiry refunds again). Re-runnable: already-terminal objects
    are left alone. Returns the keys it revoked."""
    now = await store.time_ms()
    for record in await list_budgets(store, tenant_id):
        keys = [
            store.keys.budget(tenant_id, record["scope"], record["unit"]),
            store.keys.tenant(tenant_id),
            store.keys.events(tenant_id),
        ]
        _script_ok(await store.run("budget_update", keys, ["close", str(now), _ctx(tenant_id)]))
    revoked = []
    for key in await list_api_keys(store, tenant_id):
        if key.get("status") != "REVOKED":
            revoked.append(
                await revoke_api_key(store, tenant_id, key["key_id"], CASCADE_REASON, cascade=True)
            )
    await _disable_webhooks(store, tenant_id)
    return revoked


async def _disable_webhooks(store: Store, tenant_id: str) -> None:
    """The cascade's webhook step: every subscription of the tenant DISABLED, one
    ``webhook.disabled_via_tenant_cascade`` event each (none for one already DISABLED)."""
    from .webhooks import subscriptions as subs  # the webhooks package builds on this module

    for record in await subs.list_for(store, [tenant_id]):
        prior = record.get("status", "ACTIVE")
        if prior == "DISABLED":
            continue
        data: dict[str, Any] = {
            "subscription_id": record["subscription_id"],
            "prior_status": prior,
            "new_status": "DISABLED",
            "cascade_reason": "tenant_closed",
        }
        if record.get("name"):
            data["name"] = record["name"]
        await subs.set_status(
            store,
            record,
            "DISABLED",
            "webhook.disabled_via_tenant_cascade",
            data=data,
        )


async def list_tenants(store: Store) -> list[dict[str, str]]:
    """Every tenant record, oldest first (the admin plane filters and pages)."""
    ids: list[str] = await store.redis.zrange(store.keys.tenants(), 0, -1)
    return await _hgetall_many(store, [store.keys.tenant(t) for t in ids])


async def _hgetall_many(store: Store, keys: list[str]) -> list[dict[str, str]]:
    if not keys:
        return []
    async with store.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        rows: list[dict[str, str]] = await pipe.execute()
    return [dict(r) for r in rows if r]


# -- API keys --------------------------------------------------------------------------------
async def list_api_keys(store: Store, tenant_id: str | None = None) -> list[dict[str, str]]:
    """API key records of one tenant (or of every tenant), oldest first."""
    tenants = (
        [tenant_id]
        if tenant_id is not None
        else await store.redis.zrange(store.keys.tenants(), 0, -1)
    )
    out: list[dict[str, str]] = []
    for t in tenants:
        ids: list[str] = await store.redis.zrange(store.keys.api_keys(t), 0, -1)
        out += await _hgetall_many(store, [store.keys.api_key(t, k) for k in ids])
    return out


async def find_api_key(store: Store, key_id: str) -> dict[str, str] | None:
    """The record of ``key_id`` whatever its tenant, or None."""
    tenant: str | None = await store.redis.get(store.keys.api_key_owner(key_id))
    if tenant is None:
        return None
    record: dict[str, str] = await store.redis.hgetall(store.keys.api_key(tenant, key_id))
    return record or None


async def update_api_key(
    store: Store, tenant_id: str, key_id: str, fields: Mapping[str, str]
) -> dict[str, str]:
    """Change mutable key fields (name, description, permissions, scope filter, metadata);
    409 for a revoked or expired key."""
    key = store.keys.api_key(tenant_id, key_id)
    record: dict[str, str] = await store.redis.hgetall(key)
    if not record:
        raise ProtocolError("NOT_FOUND", f"API key {key_id} not found")
    if record.get("status") == "REVOKED":
        raise ProtocolError("KEY_REVOKED", f"API key {key_id} is revoked", status=409)
    if int(record.get("expires_at") or 0) and int(record["expires_at"]) <= await store.time_ms():
        raise ProtocolError("KEY_EXPIRED", f"API key {key_id} has expired", status=409)
    if fields:
        before = record.get("permissions_json")
        record.update(fields)
        async with store.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict(fields))
            if "permissions_json" in fields and fields["permissions_json"] != before:
                events.xadd(
                    pipe,
                    store.keys.events(tenant_id),
                    "api_key.permissions_changed",
                    _ctx(tenant_id),
                    data=_key_event(record, "ACTIVE", "ACTIVE"),
                )
            await pipe.execute()
    return record


# -- budgets ---------------------------------------------------------------------------------
async def list_budgets(store: Store, tenant_id: str | None = None) -> list[dict[str, str]]:
    """Budget records of one tenant (or of every tenant), a parent scope before its children."""
    tenants = (
        [tenant_id]
        if tenant_id is not None
        else await store.redis.zrange(store.keys.tenants(), 0, -1)
    )
    out: list[dict[str, str]] = []
    for t in tenants:
        members: list[str] = await store.redis.zrange(store.keys.budgets(t), 0, -1)
        keys = []
        for m in members:
            scope, _, unit = m.rpartition("|")
            keys.append(store.keys.budget(t, scope, unit))
        rows = await _hgetall_many(store, keys)
        out += sorted(rows, key=lambda r: (r.get("scope", ""), r.get("unit", "")))
    return out


async def update_budget(
    store: Store,
    tenant_id: str,
    scope: str,
    unit: str,
    mode: str,
    fields: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """PATCH (``mode="patch"``: overdraft_limit, commit_overage_policy, metadata_json, with
    is_over_limit recomputed), ``"freeze"`` or ``"unfreeze"`` one budget; the record after."""
    scope = normalize_scope(scope, tenant_id)
    check_unit(unit)
    now = await store.time_ms()
    args = [mode, str(now)]
    for field, value in (fields or {}).items():
        args += [field, value]
    keys = [
        store.keys.budget(tenant_id, scope, unit),
        store.keys.tenant(tenant_id),
        store.keys.events(tenant_id),
    ]
    args.append(_ctx(tenant_id))
    return _pairs(_script_ok(await store.run("budget_update", keys, args)))


FUND_OPERATIONS = ("CREDIT", "DEBIT", "RESET", "RESET_SPENT", "REPAY_DEBT")
FUND_IDEMPOTENCY_TTL_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class FundResult:
    """Before/after ledger values of one funding operation (ints; remaining may be < 0)."""

    operation: str
    previous_allocated: int
    new_allocated: int
    previous_remaining: int
    new_remaining: int
    previous_debt: int
    new_debt: int
    previous_spent: int
    new_spent: int
    timestamp_ms: int
    replayed: bool = False


async def fund_budget(
    store: Store,
    tenant_id: str,
    scope: str,
    unit: str,
    operation: str,
    amount: int,
    *,
    spent: int | None = None,
    idempotency_key: str | None = None,
) -> FundResult:
    """Run one funding operation through ``fund.lua``.

    With an idempotency key (scoped to the tenant), a retry of the same request replays the
    stored result without touching the ledger and a different request under that key is
    409 IDEMPOTENCY_MISMATCH."""
    scope = normalize_scope(scope, tenant_id)
    check_unit(unit)
    check_amount(amount, "amount")
    if spent is not None:
        check_amount(spent, "spent")
    if operation not in FUND_OPERATIONS:
        raise invalid(f"operation must be one of {', '.join(FUND_OPERATIONS)}")
    request_hash = ""
    if idempotency_key:
        # Canonical form of everything that defines the effect (v1 tags the format).
        canonical = {
            "v": 1,
            "scope": scope,
            "unit": unit,
            "operation": operation,
            "amount": str(amount),
            "spent": None if spent is None or operation != "RESET_SPENT" else str(spent),
        }
        request_hash = hashlib.sha256(
            orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
    keys = [
        store.keys.budget(tenant_id, scope, unit),
        store.keys.tenant(tenant_id),
        store.keys.idempotency(tenant_id, "fund", idempotency_key or "-"),
        store.keys.events(tenant_id),
    ]
    args = [
        operation,
        str(amount),
        "" if spent is None or operation != "RESET_SPENT" else str(spent),
        request_hash,
        str(FUND_IDEMPOTENCY_TTL_MS),
        _ctx(tenant_id),
    ]
    reply = await store.run("fund", keys, args)
    kind = reply[0]
    values = _script_ok(reply)
    return FundResult(
        operation=str(values[0]),
        previous_allocated=int(values[1]),
        new_allocated=int(values[2]),
        previous_remaining=int(values[3]),
        new_remaining=int(values[4]),
        previous_debt=int(values[5]),
        new_debt=int(values[6]),
        previous_spent=int(values[7]),
        new_spent=int(values[8]),
        timestamp_ms=int(values[9]),
        replayed=kind == "REPLAY",
    )
