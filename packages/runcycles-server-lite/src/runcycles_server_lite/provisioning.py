"""Storage-level provisioning: tenants, API keys and budgets as records in Redis.

The admin HTTP plane validates wire payloads and calls these; tests and the CLI use them too,
so there is exactly one writer of each record format (see ``keys.py`` for the layout).
Timestamps are Redis TIME epoch milliseconds, stored as decimal strings.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

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
    key = store.keys.tenant(tenant_id)
    # HSETNX on tenant_id is the create-once guard; the rest follows only if we won it.
    if not await store.redis.hsetnx(key, "tenant_id", tenant_id):
        existing: dict[str, str] = await store.redis.hgetall(key)
        return existing, False
    await store.redis.hset(key, mapping=record)
    await store.redis.zadd(store.keys.tenants(), {tenant_id: now})
    return record, True


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
) -> CreatedKey:
    """Mint a key for an existing tenant. The secret is returned here and never stored."""
    if await get_tenant(store, tenant_id) is None:
        raise ProtocolError("NOT_FOUND", f"tenant {tenant_id} not found")
    now = await store.time_ms()
    key_id = "key_" + uuid.uuid4().hex
    secret = API_KEY_PREFIX + secrets.token_urlsafe(24)
    record = {
        "key_id": key_id,
        "tenant_id": tenant_id,
        "key_prefix": secret[:API_KEY_LOOKUP_PREFIX_LEN],
        "key_hash": secret_digest(secret),
        "name": name,
        "permissions_json": _json(list(permissions or DEFAULT_PERMISSIONS)),
        "status": "ACTIVE",
        "created_at": str(now),
        "expires_at": str(
            expires_at_ms if expires_at_ms is not None else now + DEFAULT_KEY_LIFETIME_MS
        ),
        "metadata_json": _json(dict(metadata or {})),
    }
    if description is not None:
        record["description"] = description
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(store.keys.api_key(tenant_id, key_id), mapping=record)
        pipe.zadd(store.keys.api_keys(tenant_id), {key_id: now})
        await pipe.execute()
    # The lookup lives in another slot; written last so a key is never resolvable before
    # its record exists.
    await store.redis.set(store.keys.api_key_lookup(record["key_hash"]), f"{tenant_id}\n{key_id}")
    return CreatedKey(key_id=key_id, secret=secret, record=record)


async def revoke_api_key(
    store: Store, tenant_id: str, key_id: str, reason: str | None = None
) -> dict[str, str]:
    key = store.keys.api_key(tenant_id, key_id)
    record: dict[str, str] = await store.redis.hgetall(key)
    if not record:
        raise ProtocolError("NOT_FOUND", f"API key {key_id} not found")
    now = await store.time_ms()
    update = {"status": "REVOKED", "revoked_at": str(now)}
    if reason:
        update["revoked_reason"] = reason
    await store.redis.hset(key, mapping=update)
    await store.redis.delete(store.keys.api_key_lookup(record["key_hash"]))
    record.update(update)
    return record


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
) -> dict[str, str]:
    """Create a budget ledger for (scope, unit); 409 DUPLICATE_RESOURCE if it exists."""
    scope = normalize_scope(scope, tenant_id)
    check_unit(unit)
    check_amount(allocated, "allocated")
    check_amount(overdraft_limit, "overdraft_limit")
    if commit_overage_policy is not None and commit_overage_policy not in OVERAGE_POLICIES:
        raise invalid("commit_overage_policy is not a CommitOveragePolicy")
    if await get_tenant(store, tenant_id) is None:
        raise ProtocolError("NOT_FOUND", f"tenant {tenant_id} not found")
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
    key = store.keys.budget(tenant_id, scope, unit)
    if not await store.redis.hsetnx(key, "ledger_id", record["ledger_id"]):
        raise ProtocolError(
            "DUPLICATE_RESOURCE", f"budget for {scope} in {unit} already exists", status=409
        )
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=record)
        pipe.zadd(store.keys.budgets(tenant_id), {f"{scope}|{unit}": 0})
        await pipe.execute()
    return record


async def get_budget(store: Store, tenant_id: str, scope: str, unit: str) -> dict[str, str] | None:
    record: dict[str, str] = await store.redis.hgetall(
        store.keys.budget(tenant_id, normalize_scope(scope, tenant_id), unit)
    )
    return record or None
