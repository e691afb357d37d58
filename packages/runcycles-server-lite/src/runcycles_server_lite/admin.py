"""Admin plane: a compatible subset of the governance admin API (cycles-governance-admin v0.1.25).

Same paths, payloads, status codes and error codes as the reference admin server for tenants,
API keys, budgets (create, list, lookup, update, freeze/unfreeze, fund) and auth
validate/introspect, so provisioning scripts written for the reference work unchanged.
Records are written only through :mod:`provisioning`; this module validates wire payloads,
authorises the caller and renders records (epoch-ms timestamps become ISO-8601).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import provisioning as prov
from .admin_models import (
    ApiKeyCreate,
    ApiKeyUpdate,
    BudgetBulkAction,
    BudgetCreate,
    BudgetFunding,
    BudgetStatusTransition,
    BudgetUpdate,
    TenantBulkAction,
    TenantCreate,
    TenantUpdate,
    check_unit,
    parse,
)
from .auth import BUDGETS_READ, BUDGETS_WRITE, Principal
from .errors import ProtocolError, invalid
from .http import JSONResponse, raw_json_response, read_json
from .keys import UNITS
from .services import Services, services

MAX_LIMIT = 100
DEFAULT_LIMIT = 50
MAX_SEARCH = 128

_ADMIN = Principal(tenant="", key_id="admin", permissions=frozenset(), is_admin=True)


# -- rendering -------------------------------------------------------------------------------
def iso(ms: str | int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with millisecond precision (``...T..:..:..sssZ``)."""
    if ms is None or ms == "":
        return None
    value = int(ms)
    dt = datetime.fromtimestamp(value // 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{value % 1000:03d}Z"


def _ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _loads(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return default


def _amount(unit: str, value: str | int | None) -> dict[str, Any]:
    return {"unit": unit, "amount": int(value or 0)}


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def tenant_wire(r: Mapping[str, str]) -> dict[str, Any]:
    """A stored tenant record as the spec's Tenant object."""

    def num(field: str) -> int | None:
        return int(r[field]) if r.get(field) else None

    return _drop_none(
        {
            "tenant_id": r["tenant_id"],
            "name": r.get("name", ""),
            "status": r.get("status", "ACTIVE"),
            "parent_tenant_id": r.get("parent_tenant_id"),
            "default_commit_overage_policy": r.get("default_commit_overage_policy"),
            "default_reservation_ttl_ms": num("default_reservation_ttl_ms"),
            "max_reservation_ttl_ms": num("max_reservation_ttl_ms"),
            "max_reservation_extensions": num("max_reservation_extensions"),
            "reservation_expiry_policy": r.get("reservation_expiry_policy"),
            "metadata": _loads(r.get("metadata_json"), None) or None,
            "created_at": iso(r.get("created_at")),
            "updated_at": iso(r.get("updated_at")),
            "suspended_at": iso(r.get("suspended_at")),
            "closed_at": iso(r.get("closed_at")),
        }
    )


def key_wire(r: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """A stored API key record as the spec's ApiKey object (never the hash or secret)."""
    status = r.get("status", "ACTIVE")
    if status == "ACTIVE" and r.get("expires_at") and int(r["expires_at"]) <= now_ms:
        status = "EXPIRED"
    return _drop_none(
        {
            "key_id": r["key_id"],
            "tenant_id": r["tenant_id"],
            "key_prefix": r.get("key_prefix"),
            "name": r.get("name"),
            "description": r.get("description"),
            "permissions": _loads(r.get("permissions_json"), []),
            "scope_filter": _loads(r.get("scope_filter_json"), None),
            "status": status,
            "created_at": iso(r.get("created_at")),
            "last_used_at": iso(r.get("last_used_at")),
            "expires_at": iso(r.get("expires_at")),
            "revoked_at": iso(r.get("revoked_at")),
            "revoked_reason": r.get("revoked_reason"),
            "metadata": _loads(r.get("metadata_json"), None) or None,
        }
    )


def budget_wire(r: Mapping[str, str]) -> dict[str, Any]:
    """A stored budget hash as the spec's BudgetLedger object."""
    unit = r.get("unit", "")
    return _drop_none(
        {
            "ledger_id": r.get("ledger_id", ""),
            "tenant_id": r.get("tenant_id"),
            "scope": r.get("scope", ""),
            "scope_path": r.get("scope", ""),
            "unit": unit,
            "allocated": _amount(unit, r.get("allocated")),
            "remaining": _amount(unit, r.get("remaining")),
            "reserved": _amount(unit, r.get("reserved")),
            "spent": _amount(unit, r.get("spent")),
            "debt": _amount(unit, r.get("debt")),
            "overdraft_limit": _amount(unit, r.get("overdraft_limit")),
            "is_over_limit": r.get("is_over_limit") == "true",
            "commit_overage_policy": r.get("commit_overage_policy"),
            "status": r.get("status", "ACTIVE"),
            "rollover_policy": r.get("rollover_policy"),
            "period_start": iso(r.get("period_start")),
            "period_end": iso(r.get("period_end")),
            "created_at": iso(r.get("created_at")),
            "updated_at": iso(r.get("updated_at")),
        }
    )


def fund_wire(res: prov.FundResult, unit: str) -> dict[str, Any]:
    """BudgetFundingResponse. Rendered only from the stored result, so a replay is
    byte-identical to the original response."""
    return {
        "operation": res.operation,
        "previous_allocated": _amount(unit, res.previous_allocated),
        "new_allocated": _amount(unit, res.new_allocated),
        "previous_remaining": _amount(unit, res.previous_remaining),
        "new_remaining": _amount(unit, res.new_remaining),
        "previous_debt": _amount(unit, res.previous_debt),
        "new_debt": _amount(unit, res.new_debt),
        "previous_spent": _amount(unit, res.previous_spent),
        "new_spent": _amount(unit, res.new_spent),
        "timestamp": iso(res.timestamp_ms),
    }


# -- auth helpers ----------------------------------------------------------------------------
def _require_admin(request: Request) -> Services:
    svc = services(request)
    svc.auth.require_admin(request)
    return svc


async def _caller(request: Request, permission: str) -> tuple[Services, Principal]:
    """Dual-auth endpoints: the admin key (acting for any tenant) or a tenant key that holds
    ``permission`` (403 otherwise)."""
    svc = services(request)
    if svc.auth.is_admin(request):
        return svc, _ADMIN
    return svc, await svc.auth.tenant(request, permission)


def _scope_tenant(scope: str | None) -> str:
    """The tenant a scope path belongs to (its leading ``tenant:<id>`` segment)."""
    if not scope:
        raise invalid("scope query parameter is required")
    level, sep, value = scope.strip().lower().split("/")[0].partition(":")
    if level != "tenant" or not sep or not value:
        raise invalid("scope must start with tenant:<tenant_id>", scope=scope)
    return value


def _owned_scope(principal: Principal, scope: str | None) -> str:
    """The tenant owning ``scope``; a tenant key may only touch its own scopes (403)."""
    tenant = _scope_tenant(scope)
    if not principal.is_admin and tenant != principal.tenant:
        raise ProtocolError("FORBIDDEN", "scope belongs to another tenant")
    return tenant


def _unit_param(request: Request) -> str:
    unit = request.query_params.get("unit")
    if not unit:
        raise invalid("unit query parameter is required")
    if unit not in UNITS:
        raise invalid(f"unit must be one of {', '.join(UNITS)}", unit=unit)
    return unit


async def _optional_body(request: Request) -> Any:
    body = await request.body()
    return {} if not body.strip() else await read_json(request)


def _metadata_json(metadata: Mapping[str, Any] | None) -> str:
    return orjson.dumps(dict(metadata or {})).decode()


# -- pagination ------------------------------------------------------------------------------
def _bool_param(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise invalid(f"{name} must be true or false")


def _search_param(request: Request) -> str | None:
    raw = request.query_params.get("search") or None
    if raw is not None and len(raw) > MAX_SEARCH:
        raise invalid(f"search must be at most {MAX_SEARCH} characters")
    return raw.lower() if raw else None


def _page(
    request: Request,
    rows: list[dict[str, Any]],
    sort_keys: Mapping[str, Callable[[dict[str, Any]], Any]],
    filters: Mapping[str, Any],
    wrapper: str,
) -> Response:
    """Sort, then page ``rows`` with an opaque offset cursor bound to the sort and filters."""
    q = request.query_params
    raw_limit = q.get("limit")
    try:
        limit = DEFAULT_LIMIT if raw_limit is None else int(raw_limit)
    except ValueError:
        raise invalid("limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid(f"limit must be between 1 and {MAX_LIMIT}")
    sort_by = q.get("sort_by")
    sort_dir = q.get("sort_dir")
    if sort_by is not None and sort_by not in sort_keys:
        raise invalid(f"sort_by must be one of {', '.join(sort_keys)}")
    if sort_dir is not None and sort_dir not in ("asc", "desc"):
        raise invalid("sort_dir must be asc or desc")
    # Without sort_by the natural (creation / scope) order is kept, oldest first.
    descending = sort_by is not None and sort_dir != "asc"
    if sort_by is not None:
        rows = sorted(rows, key=sort_keys[sort_by], reverse=descending)
    binding = hashlib.sha256(
        orjson.dumps({"f": dict(filters), "s": sort_by, "d": sort_dir}, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:16]
    offset = 0
    cursor = q.get("cursor")
    if cursor:
        try:
            decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            offset, bound = int(decoded["o"]), str(decoded["b"])
        except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise invalid("cursor is malformed") from None
        if bound != binding or offset < 0:
            raise invalid("cursor was issued for a different sort or filter set")
    page = rows[offset : offset + limit]
    body: dict[str, Any] = {wrapper: page, "has_more": offset + limit < len(rows)}
    if body["has_more"]:
        token = orjson.dumps({"o": offset + limit, "b": binding})
        body["next_cursor"] = base64.urlsafe_b64encode(token).decode().rstrip("=")
    return JSONResponse(body)


def _field_key(name: str) -> Callable[[dict[str, Any]], Any]:
    def key(row: dict[str, Any]) -> Any:
        return row.get(name) or ""

    return key


def _contains(needle: str | None, *values: str | None) -> bool:
    return needle is None or any(needle in (v or "").lower() for v in values)


# -- tenants ---------------------------------------------------------------------------------
_TENANT_COMPARED = (
    "parent_tenant_id",
    "default_commit_overage_policy",
    "default_reservation_ttl_ms",
    "max_reservation_ttl_ms",
    "max_reservation_extensions",
    "reservation_expiry_policy",
)


async def create_tenant(request: Request) -> Response:
    svc = _require_admin(request)
    req = parse(TenantCreate, await read_json(request))
    record, created = await prov.create_tenant(
        svc.store,
        req.tenant_id,
        req.name,
        default_commit_overage_policy=req.default_commit_overage_policy,
        default_reservation_ttl_ms=req.default_reservation_ttl_ms,
        max_reservation_ttl_ms=req.max_reservation_ttl_ms,
        max_reservation_extensions=req.max_reservation_extensions,
        reservation_expiry_policy=req.reservation_expiry_policy,
        parent_tenant_id=req.parent_tenant_id,
        metadata=req.metadata,
    )
    if created:
        return JSONResponse(tenant_wire(record), status_code=201)
    # Idempotent create: a retry of the same request gets the existing tenant (200); a
    # different tenant under an existing id is a conflict.
    conflicts = [] if record.get("name") == req.name else ["name"]
    for field in _TENANT_COMPARED:
        value = getattr(req, field)
        if value is not None and record.get(field) != str(value):
            conflicts.append(field)
    if req.metadata is not None and _loads(record.get("metadata_json"), {}) != req.metadata:
        conflicts.append("metadata")
    if conflicts:
        raise ProtocolError(
            "DUPLICATE_RESOURCE",
            f"tenant {req.tenant_id} already exists with different {', '.join(conflicts)}",
            details={"tenant_id": req.tenant_id, "conflicting_fields": conflicts},
        )
    return JSONResponse(tenant_wire(record), status_code=200)


async def get_tenant(request: Request) -> Response:
    svc = _require_admin(request)
    tenant_id = request.path_params["tenant_id"]
    record = await prov.get_tenant(svc.store, tenant_id)
    if record is None:
        raise ProtocolError("TENANT_NOT_FOUND", f"tenant {tenant_id} not found")
    return JSONResponse(tenant_wire(record))


async def list_tenants(request: Request) -> Response:
    svc = _require_admin(request)
    q = request.query_params
    status = q.get("status") or None
    if status is not None and status not in ("ACTIVE", "SUSPENDED", "CLOSED"):
        raise invalid("status must be ACTIVE, SUSPENDED or CLOSED")
    parent = q.get("parent_tenant_id") or None
    search = _search_param(request)
    rows = [
        tenant_wire(r)
        for r in await prov.list_tenants(svc.store)
        if (status is None or r.get("status") == status)
        and (parent is None or r.get("parent_tenant_id") == parent)
        and _contains(search, r.get("tenant_id"), r.get("name"))
    ]
    sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        "tenant_id": lambda t: t["tenant_id"],
        "name": lambda t: t.get("name", ""),
        "status": lambda t: t["status"],
        "created_at": lambda t: t.get("created_at", ""),
    }
    filters = {"status": status, "parent": parent, "search": search}
    return _page(request, rows, sort_keys, filters, "tenants")


async def update_tenant(request: Request) -> Response:
    svc = _require_admin(request)
    tenant_id = request.path_params["tenant_id"]
    req = parse(TenantUpdate, await read_json(request))
    fields: dict[str, str] = {}
    if req.name is not None:
        fields["name"] = req.name
    if req.metadata is not None:
        fields["metadata_json"] = _metadata_json(req.metadata)
    for field in (
        "default_commit_overage_policy",
        "default_reservation_ttl_ms",
        "max_reservation_ttl_ms",
        "max_reservation_extensions",
    ):
        value = getattr(req, field)
        if value is not None:
            fields[field] = str(value)
    if req.default_reservation_ttl_ms is not None or req.max_reservation_ttl_ms is not None:
        current = await prov.get_tenant(svc.store, tenant_id) or {}
        default_ttl = req.default_reservation_ttl_ms or int(
            current.get("default_reservation_ttl_ms") or 0
        )
        max_ttl = req.max_reservation_ttl_ms or int(
            current.get("max_reservation_ttl_ms") or prov.DEFAULT_MAX_RESERVATION_TTL_MS
        )
        if default_ttl > max_ttl:
            raise invalid("default_reservation_ttl_ms must not exceed max_reservation_ttl_ms")
    record, previous = await prov.update_tenant(svc.store, tenant_id, fields, req.status)
    if req.status == "CLOSED":
        # Also on a re-close, which finishes a cascade an earlier close left incomplete.
        await prov.close_tenant_cascade(svc.store, tenant_id)
    if req.status in ("SUSPENDED", "CLOSED") and previous != "CLOSED":
        # Suspension and closure bite at once in this process; other workers follow
        # within the auth cache TTL.
        svc.auth.invalidate()
    return JSONResponse(tenant_wire(record))


BULK_MAX_ROWS = 500
BULK_IDEMPOTENCY_TTL_MS = 15 * 60 * 1000
_BULK_TARGET = {"SUSPEND": "SUSPENDED", "REACTIVATE": "ACTIVE", "CLOSE": "CLOSED"}


async def _replayable_bulk(
    svc: Services,
    endpoint: str,
    req: TenantBulkAction | BudgetBulkAction,
    run: Callable[[], Awaitable[dict[str, Any]]],
) -> Response:
    """Run a bulk action once per idempotency key: a repeat within 15 minutes replays the
    stored response, a different request under the key is 409 IDEMPOTENCY_MISMATCH."""
    request_hash = hashlib.sha256(
        orjson.dumps(req.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    idem = svc.store.keys.admin_idempotency(endpoint, req.idempotency_key)
    r = svc.store.redis
    # Claim the key first, so a double submit cannot run the action twice.
    if not await r.hsetnx(idem, "hash", request_hash):
        prior: dict[str, str] = await r.hgetall(idem)
        if prior.get("hash") != request_hash:
            raise ProtocolError(
                "IDEMPOTENCY_MISMATCH", "idempotency_key was already used with another request"
            )
        if "body" not in prior:
            raise ProtocolError(
                "IDEMPOTENCY_MISMATCH", "a bulk action with this key is still running", status=409
            )
        return raw_json_response(prior["body"])
    await r.pexpire(idem, BULK_IDEMPOTENCY_TTL_MS)
    try:
        body = await run()
    except BaseException:
        await r.delete(idem)  # rows are idempotent or gated, so a retry may redo the run
        raise
    encoded = orjson.dumps(body)
    await r.hset(idem, "body", encoded.decode())
    return raw_json_response(encoded)


def _bulk_gate(matched: int, expected: int | None) -> None:
    """The bulk safety gates: expected_count (409, no writes) and the 500-row cap (400)."""
    if expected is not None and expected != matched:
        raise ProtocolError(
            "COUNT_MISMATCH",
            f"filter matches {matched} rows, expected {expected}",
            status=409,
            details={"total_matched": matched, "expected_count": expected},
        )
    if matched > BULK_MAX_ROWS:
        raise ProtocolError(
            "LIMIT_EXCEEDED",
            f"filter matches {matched} rows; at most {BULK_MAX_ROWS} per call",
            status=400,
            details={"total_matched": matched},
        )


async def bulk_action_tenants(request: Request) -> Response:
    """POST /v1/admin/tenants/bulk-action: SUSPEND / REACTIVATE / CLOSE every tenant matching
    a filter, gated by expected_count and a 500-row cap, replayable for 15 minutes."""
    svc = _require_admin(request)
    req = parse(TenantBulkAction, await read_json(request))
    f = req.filter
    if f.status is None and f.parent_tenant_id is None and not f.search:
        raise invalid("filter must name at least one of status, parent_tenant_id, search")
    return await _replayable_bulk(svc, "tenants-bulk", req, lambda: _run_bulk(svc, req))


async def _run_bulk(svc: Services, req: TenantBulkAction) -> dict[str, Any]:
    f = req.filter
    search = f.search.lower() if f.search else None
    matched = [
        t
        for t in await prov.list_tenants(svc.store)
        if (f.status is None or t.get("status") == f.status)
        and (f.parent_tenant_id is None or t.get("parent_tenant_id") == f.parent_tenant_id)
        and _contains(search, t.get("tenant_id"), t.get("name"))
    ]
    _bulk_gate(len(matched), req.expected_count)
    target = _BULK_TARGET[req.action]
    succeeded: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for t in matched:
        tenant_id, status = t["tenant_id"], t.get("status", "ACTIVE")
        if status == target:
            skipped.append({"id": tenant_id, "reason": "ALREADY_IN_TARGET_STATE"})
            continue
        if status == "CLOSED":
            failed.append(
                {"id": tenant_id, "error_code": "INVALID_TRANSITION", "message": "tenant is closed"}
            )
            continue
        try:
            await prov.update_tenant(svc.store, tenant_id, {}, target)
            if target == "CLOSED":
                await prov.close_tenant_cascade(svc.store, tenant_id)
        except ProtocolError as exc:
            code = "INVALID_TRANSITION" if exc.code == "TENANT_CLOSED" else exc.code
            failed.append({"id": tenant_id, "error_code": code, "message": exc.message})
            continue
        succeeded.append({"id": tenant_id})
    if succeeded and target != "ACTIVE":
        svc.auth.invalidate()
    return {
        "action": req.action,
        "total_matched": len(matched),
        "succeeded": succeeded,
        "failed": failed,
        "skipped": skipped,
        "idempotency_key": req.idempotency_key,
    }


# -- API keys --------------------------------------------------------------------------------
async def create_api_key(request: Request) -> Response:
    svc = _require_admin(request)
    req = parse(ApiKeyCreate, await read_json(request))
    expires_ms = _ms(req.expires_at) if req.expires_at is not None else None
    if expires_ms is not None and expires_ms <= await svc.store.time_ms():
        raise invalid("expires_at must be in the future")
    try:
        created = await prov.create_api_key(
            svc.store,
            req.tenant_id,
            req.name,
            permissions=req.permissions,
            description=req.description,
            expires_at_ms=expires_ms,
            metadata=req.metadata,
            scope_filter=req.scope_filter,
        )
    except ProtocolError as exc:
        if exc.code == "TENANT_NOT_FOUND":
            # The spec answers an unknown tenant on key creation with 400.
            exc.status = 400
        raise
    r = created.record
    body = _drop_none(
        {
            "key_id": created.key_id,
            "key_secret": created.secret,
            "key_prefix": r["key_prefix"],
            "tenant_id": r["tenant_id"],
            "permissions": _loads(r["permissions_json"], []),
            "created_at": iso(r["created_at"]),
            "expires_at": iso(r["expires_at"]),
        }
    )
    return JSONResponse(body, status_code=201)


async def list_api_keys(request: Request) -> Response:
    svc = _require_admin(request)
    q = request.query_params
    tenant_id = q.get("tenant_id") or None
    status = q.get("status") or None
    if status is not None and status not in ("ACTIVE", "REVOKED", "EXPIRED"):
        raise invalid("status must be ACTIVE, REVOKED or EXPIRED")
    search = _search_param(request)
    now = await svc.store.time_ms()
    rows = [
        key_wire(r, now)
        for r in await prov.list_api_keys(svc.store, tenant_id)
        if _contains(search, r.get("key_id"), r.get("name"))
    ]
    if status is not None:
        rows = [k for k in rows if k["status"] == status]
    sort_keys = {
        name: _field_key(name)
        for name in ("key_id", "name", "tenant_id", "status", "created_at", "expires_at")
    }
    filters = {"tenant_id": tenant_id, "status": status, "search": search}
    return _page(request, rows, sort_keys, filters, "keys")


async def _key_record(svc: Services, key_id: str) -> dict[str, str]:
    record = await prov.find_api_key(svc.store, key_id)
    if record is None:
        raise ProtocolError("NOT_FOUND", f"API key {key_id} not found")
    return record


async def update_api_key(request: Request) -> Response:
    svc = _require_admin(request)
    req = parse(ApiKeyUpdate, await read_json(request))
    record = await _key_record(svc, request.path_params["key_id"])
    fields: dict[str, str] = {}
    if req.name is not None:
        fields["name"] = req.name
    if req.description is not None:
        fields["description"] = req.description
    if req.permissions is not None:
        fields["permissions_json"] = orjson.dumps(req.permissions).decode()
    if req.scope_filter is not None:
        fields["scope_filter_json"] = orjson.dumps(req.scope_filter).decode()
    if req.metadata is not None:
        fields["metadata_json"] = _metadata_json(req.metadata)
    updated = await prov.update_api_key(svc.store, record["tenant_id"], record["key_id"], fields)
    svc.auth.invalidate(record["key_hash"])
    return JSONResponse(key_wire(updated, await svc.store.time_ms()))


async def revoke_api_key(request: Request) -> Response:
    svc = _require_admin(request)
    reason = request.query_params.get("reason") or None
    if reason is not None and len(reason) > 512:
        raise invalid("reason must be at most 512 characters")
    record = await _key_record(svc, request.path_params["key_id"])
    revoked = await prov.revoke_api_key(svc.store, record["tenant_id"], record["key_id"], reason)
    # Revocation bites at once in this process; other workers follow within the cache TTL.
    svc.auth.invalidate(record["key_hash"])
    return JSONResponse(key_wire(revoked, await svc.store.time_ms()))


# -- budgets ---------------------------------------------------------------------------------
async def create_budget(request: Request) -> Response:
    svc, principal = await _caller(request, BUDGETS_WRITE)
    req = parse(BudgetCreate, await read_json(request))
    if principal.is_admin:
        if not req.tenant_id:
            raise invalid("tenant_id is required when creating a budget with the admin key")
        tenant_id = req.tenant_id
    else:
        if req.tenant_id is not None:
            raise invalid("tenant_id must not be sent with a tenant API key")
        tenant_id = principal.tenant
        _owned_scope(principal, req.scope)
    check_unit(req.allocated, req.unit, "allocated")
    check_unit(req.overdraft_limit, req.unit, "overdraft_limit")
    try:
        record = await prov.create_budget(
            svc.store,
            tenant_id,
            req.scope,
            req.unit,
            req.allocated.amount,
            overdraft_limit=req.overdraft_limit.amount if req.overdraft_limit else 0,
            commit_overage_policy=req.commit_overage_policy,
            rollover_policy=req.rollover_policy,
            metadata=req.metadata,
            period_start_ms=_ms(req.period_start) if req.period_start else None,
            period_end_ms=_ms(req.period_end) if req.period_end else None,
        )
    except ProtocolError as exc:
        if exc.code == "TENANT_NOT_FOUND":
            # The spec answers "invalid scope or tenant not found" with 400.
            exc.status = 400
        raise
    return JSONResponse(budget_wire(record), status_code=201)


def _utilization(b: Mapping[str, Any]) -> float:
    allocated = int(b["allocated"]["amount"])
    return 0.0 if allocated == 0 else int(b["spent"]["amount"]) / allocated


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise invalid(f"{name} must be a number in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise invalid(f"{name} must be a number in [0, 1]")
    return value


def _match_budgets(
    records: list[dict[str, str]],
    *,
    scope_prefix: str | None,
    unit: str | None,
    status: str | None,
    over_limit: bool | None,
    has_debt: bool | None,
    umin: float | None,
    umax: float | None,
    search: str | None,
) -> list[dict[str, Any]]:
    """The listBudgets filters (AND), shared with the budget bulk action; wire rows."""
    rows = []
    for b in map(budget_wire, records):
        util = _utilization(b)
        if (
            (scope_prefix is None or b["scope"].startswith(scope_prefix))
            and (unit is None or b["unit"] == unit)
            and (status is None or b["status"] == status)
            and (over_limit is None or b["is_over_limit"] == over_limit)
            and (has_debt is None or (b["debt"]["amount"] > 0) == has_debt)
            and (umin is None or util >= umin)
            and (umax is None or util <= umax)
            and _contains(search, b.get("tenant_id"), b["scope"])
        ):
            rows.append(b)
    return rows


async def list_budgets(request: Request) -> Response:
    svc, principal = await _caller(request, BUDGETS_READ)
    q = request.query_params
    # A tenant key always lists its own tenant; tenant_id is ignored for it, per the spec.
    tenant_id = (q.get("tenant_id") or None) if principal.is_admin else principal.tenant
    scope_prefix = (q.get("scope_prefix") or "").strip().lower() or None
    unit = q.get("unit") or None
    if unit is not None and unit not in UNITS:
        raise invalid(f"unit must be one of {', '.join(UNITS)}")
    status = q.get("status") or None
    if status is not None and status not in ("ACTIVE", "FROZEN", "CLOSED"):
        raise invalid("status must be ACTIVE, FROZEN or CLOSED")
    over_limit = _bool_param(request, "over_limit")
    has_debt = _bool_param(request, "has_debt")
    umin = _float_param(request, "utilization_min")
    umax = _float_param(request, "utilization_max")
    if umin is not None and umax is not None and umin > umax:
        raise invalid("utilization_min must not exceed utilization_max")
    search = _search_param(request)
    rows = _match_budgets(
        await prov.list_budgets(svc.store, tenant_id),
        scope_prefix=scope_prefix,
        unit=unit,
        status=status,
        over_limit=over_limit,
        has_debt=has_debt,
        umin=umin,
        umax=umax,
        search=search,
    )
    sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        "tenant_id": lambda b: b.get("tenant_id", ""),
        "scope": lambda b: b["scope"],
        "unit": lambda b: b["unit"],
        "status": lambda b: b["status"],
        "commit_overage_policy": lambda b: b.get("commit_overage_policy", ""),
        "utilization": _utilization,
        "debt": lambda b: b["debt"]["amount"],
    }
    filters = {
        "tenant_id": tenant_id,
        "scope_prefix": scope_prefix,
        "unit": unit,
        "status": status,
        "over_limit": over_limit,
        "has_debt": has_debt,
        "umin": umin,
        "umax": umax,
        "search": search,
    }
    return _page(request, rows, sort_keys, filters, "ledgers")


async def lookup_budget(request: Request) -> Response:
    svc, principal = await _caller(request, BUDGETS_READ)
    scope = request.query_params.get("scope")
    tenant_id = _owned_scope(principal, scope)
    unit = _unit_param(request)
    assert scope is not None
    record = await prov.get_budget(svc.store, tenant_id, scope, unit)
    if record is None:
        raise ProtocolError("BUDGET_NOT_FOUND", f"no budget for {scope} in {unit}")
    return JSONResponse(budget_wire(record))


async def update_budget(request: Request) -> Response:
    svc = _require_admin(request)
    scope = request.query_params.get("scope")
    tenant_id = _scope_tenant(scope)
    unit = _unit_param(request)
    req = parse(BudgetUpdate, await read_json(request))
    check_unit(req.overdraft_limit, unit, "overdraft_limit")
    fields: dict[str, str] = {}
    if req.overdraft_limit is not None:
        fields["overdraft_limit"] = str(req.overdraft_limit.amount)
    if req.commit_overage_policy is not None:
        fields["commit_overage_policy"] = req.commit_overage_policy
    if req.metadata is not None:
        fields["metadata_json"] = _metadata_json(req.metadata)
    assert scope is not None
    record = await prov.update_budget(svc.store, tenant_id, scope, unit, "patch", fields)
    return JSONResponse(budget_wire(record))


async def _transition(request: Request, mode: str) -> Response:
    svc = _require_admin(request)
    scope = request.query_params.get("scope")
    tenant_id = _scope_tenant(scope)
    unit = _unit_param(request)
    parse(BudgetStatusTransition, await _optional_body(request))
    assert scope is not None
    record = await prov.update_budget(svc.store, tenant_id, scope, unit, mode)
    return JSONResponse(budget_wire(record))


async def freeze_budget(request: Request) -> Response:
    return await _transition(request, "freeze")


async def unfreeze_budget(request: Request) -> Response:
    return await _transition(request, "unfreeze")


async def fund_budget(request: Request) -> Response:
    svc, principal = await _caller(request, BUDGETS_WRITE)
    scope = request.query_params.get("scope")
    if principal.is_admin:
        tenant_id = request.query_params.get("tenant_id")
        if not tenant_id:
            raise invalid("tenant_id query parameter is required with the admin key")
    else:
        tenant_id = principal.tenant
        _owned_scope(principal, scope)
    if not scope:
        raise invalid("scope query parameter is required")
    unit = _unit_param(request)
    req = parse(BudgetFunding, await read_json(request))
    check_unit(req.amount, unit, "amount")
    check_unit(req.spent, unit, "spent")
    result = await prov.fund_budget(
        svc.store,
        tenant_id,
        scope,
        unit,
        req.operation,
        req.amount.amount,
        spent=req.spent.amount if req.spent is not None else None,
        idempotency_key=req.idempotency_key,
    )
    return JSONResponse(fund_wire(result, unit))


# Row-level failure codes of the bulk vocabulary (BulkActionRowOutcome.error_code).
_BULK_ROW_CODE = {
    "BUDGET_EXCEEDED": "BUDGET_EXCEEDED",
    "BUDGET_NOT_FOUND": "NOT_FOUND",
}


async def bulk_action_budgets(request: Request) -> Response:
    """POST /v1/admin/budgets/bulk-action: one funding operation applied to every budget of
    one tenant matching a filter (e.g. a billing-period RESET_SPENT under a scope prefix)."""
    svc = _require_admin(request)
    req = parse(BudgetBulkAction, await read_json(request))
    f = req.filter
    if (
        f.utilization_min is not None
        and f.utilization_max is not None
        and f.utilization_min > f.utilization_max
    ):
        raise invalid("utilization_min must not exceed utilization_max")
    if req.spent is not None and req.spent.unit != req.amount.unit:
        raise invalid("spent.unit must equal amount.unit")
    if await prov.get_tenant(svc.store, f.tenant_id) is None:
        raise ProtocolError("TENANT_NOT_FOUND", f"tenant {f.tenant_id} not found")
    return await _replayable_bulk(svc, "budgets-bulk", req, lambda: _run_budget_bulk(svc, req))


async def _run_budget_bulk(svc: Services, req: BudgetBulkAction) -> dict[str, Any]:
    f = req.filter
    matched = _match_budgets(
        await prov.list_budgets(svc.store, f.tenant_id),
        scope_prefix=(f.scope_prefix or "").strip().lower() or None,
        unit=f.unit,
        status=f.status,
        over_limit=f.over_limit,
        has_debt=f.has_debt,
        umin=f.utilization_min,
        umax=f.utilization_max,
        search=f.search.lower() if f.search else None,
    )
    _bulk_gate(len(matched), req.expected_count)
    succeeded: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for b in matched:
        row = b["ledger_id"]
        if b["unit"] != req.amount.unit:
            failed.append(
                {
                    "id": row,
                    "error_code": "INVALID_TRANSITION",
                    "message": f"budget unit is {b['unit']}, amount unit is {req.amount.unit}",
                }
            )
            continue
        if req.action == "REPAY_DEBT" and b["debt"]["amount"] == 0:
            skipped.append({"id": row, "reason": "ALREADY_IN_TARGET_STATE"})
            continue
        try:
            await prov.fund_budget(
                svc.store,
                f.tenant_id,
                b["scope"],
                b["unit"],
                req.action,
                req.amount.amount,
                spent=req.spent.amount if req.spent is not None else None,
            )
        except ProtocolError as exc:
            code = _BULK_ROW_CODE.get(exc.code, "INVALID_TRANSITION")
            failed.append({"id": row, "error_code": code, "message": exc.message})
            continue
        succeeded.append({"id": row})
    return {
        "action": req.action,
        "total_matched": len(matched),
        "succeeded": succeeded,
        "failed": failed,
        "skipped": skipped,
        "idempotency_key": req.idempotency_key,
    }


# -- auth ------------------------------------------------------------------------------------
_CAPABILITIES = (
    "view_overview",
    "view_budgets",
    "view_events",
    "view_webhooks",
    "view_audit",
    "view_tenants",
    "view_api_keys",
    "view_policies",
    "manage_budgets",
    "manage_tenants",
    "manage_api_keys",
    "manage_webhooks",
    "manage_policies",
    "manage_reservations",
    "view_reservations",
)


def _capabilities(p: Principal) -> dict[str, bool]:
    def any_of(*perms: str) -> bool:
        return any(perm in p.permissions for perm in perms)

    return {
        "view_overview": False,
        "view_budgets": any_of("budgets:read", "admin:read", "admin:budgets:read"),
        "view_events": any_of("events:read", "admin:read", "admin:events:read"),
        "view_webhooks": any_of("webhooks:read", "admin:read", "admin:webhooks:read"),
        "view_audit": False,
        "view_tenants": False,
        "view_api_keys": False,
        "view_policies": any_of("policies:read", "admin:read", "admin:policies:read"),
        "view_reservations": any_of(
            "reservations:create",
            "reservations:commit",
            "reservations:release",
            "reservations:extend",
            "reservations:list",
            "admin:read",
        ),
        "manage_budgets": any_of("budgets:write", "admin:write", "admin:budgets:write"),
        "manage_webhooks": any_of("webhooks:write", "admin:write", "admin:webhooks:write"),
        "manage_policies": any_of("policies:write", "admin:write", "admin:policies:write"),
        "manage_reservations": any_of(
            "reservations:create",
            "reservations:commit",
            "reservations:release",
            "reservations:extend",
            "admin:write",
        ),
        "manage_tenants": False,
        "manage_api_keys": False,
    }


async def introspect(request: Request) -> Response:
    svc = services(request)
    if svc.auth.is_admin(request):
        return JSONResponse(
            {
                "authenticated": True,
                "auth_type": "admin",
                "permissions": ["*"],
                "capabilities": dict.fromkeys(_CAPABILITIES, True),
            }
        )
    p = await svc.auth.tenant(request)
    body: dict[str, Any] = {
        "authenticated": True,
        "auth_type": "tenant",
        "permissions": sorted(p.permissions),
        "capabilities": _capabilities(p),
        "tenant_id": p.tenant,
    }
    return JSONResponse(body)


async def validate_key(request: Request) -> Response:
    svc = _require_admin(request)
    data = await read_json(request)
    secret = data.get("key_secret") if isinstance(data, dict) else None
    if not isinstance(secret, str) or not secret:
        raise invalid("key_secret is required")
    try:
        p = await svc.auth.resolve(secret)
    except ProtocolError as exc:
        if exc.code != "UNAUTHORIZED":
            raise
        reason = next(
            (
                word
                for word in ("REVOKED", "EXPIRED", "SUSPENDED", "CLOSED")
                if word.lower() in exc.message.lower()
            ),
            "INVALID",
        )
        return JSONResponse({"valid": False, "tenant_id": "", "reason": reason})
    record = await prov.find_api_key(svc.store, p.key_id)
    body = {
        "valid": True,
        "tenant_id": p.tenant,
        "key_id": p.key_id,
        "permissions": sorted(p.permissions),
    }
    if record is not None:
        scope_filter = _loads(record.get("scope_filter_json"), None)
        if scope_filter is not None:
            body["scope_filter"] = scope_filter
        body["expires_at"] = iso(record.get("expires_at"))
    return JSONResponse(_drop_none(body))


def routes() -> list[BaseRoute]:
    """Admin-plane routes (mounted on the main port and on ``--admin-port``). Mutations are
    audited under the spec's operation names."""
    from .audit import audited, list_audit_logs
    from .policies import create_policy, list_policies, update_policy

    def audit(op: str, kind: str, fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        return audited(op, kind)(fn)

    return [
        Route(
            "/v1/admin/tenants", audit("createTenant", "tenant", create_tenant), methods=["POST"]
        ),
        Route("/v1/admin/tenants", list_tenants, methods=["GET"]),
        Route(
            "/v1/admin/tenants/bulk-action",
            audit("bulkActionTenants", "tenant", bulk_action_tenants),
            methods=["POST"],
        ),
        Route("/v1/admin/tenants/{tenant_id}", get_tenant, methods=["GET"]),
        Route(
            "/v1/admin/tenants/{tenant_id}",
            audit("updateTenant", "tenant", update_tenant),
            methods=["PATCH"],
        ),
        Route(
            "/v1/admin/api-keys", audit("createApiKey", "api_key", create_api_key), methods=["POST"]
        ),
        Route("/v1/admin/api-keys", list_api_keys, methods=["GET"]),
        Route(
            "/v1/admin/api-keys/{key_id}",
            audit("updateApiKey", "api_key", update_api_key),
            methods=["PATCH"],
        ),
        Route(
            "/v1/admin/api-keys/{key_id}",
            audit("revokeApiKey", "api_key", revoke_api_key),
            methods=["DELETE"],
        ),
        Route(
            "/v1/admin/budgets", audit("createBudget", "budget", create_budget), methods=["POST"]
        ),
        Route("/v1/admin/budgets", list_budgets, methods=["GET"]),
        Route(
            "/v1/admin/budgets", audit("updateBudget", "budget", update_budget), methods=["PATCH"]
        ),
        Route("/v1/admin/budgets/lookup", lookup_budget, methods=["GET"]),
        Route(
            "/v1/admin/budgets/bulk-action",
            audit("bulkActionBudgets", "budget", bulk_action_budgets),
            methods=["POST"],
        ),
        Route(
            "/v1/admin/budgets/freeze",
            audit("freezeBudget", "budget", freeze_budget),
            methods=["POST"],
        ),
        Route(
            "/v1/admin/budgets/unfreeze",
            audit("unfreezeBudget", "budget", unfreeze_budget),
            methods=["POST"],
        ),
        Route(
            "/v1/admin/budgets/fund", audit("fundBudget", "budget", fund_budget), methods=["POST"]
        ),
        Route(
            "/v1/admin/policies", audit("createPolicy", "policy", create_policy), methods=["POST"]
        ),
        Route("/v1/admin/policies", list_policies, methods=["GET"]),
        Route(
            "/v1/admin/policies/{policy_id}",
            audit("updatePolicy", "policy", update_policy),
            methods=["PATCH"],
        ),
        Route("/v1/admin/audit/logs", list_audit_logs, methods=["GET"]),
        Route("/v1/auth/validate", validate_key, methods=["POST"]),
        Route("/v1/auth/introspect", introspect, methods=["GET"]),
    ]
