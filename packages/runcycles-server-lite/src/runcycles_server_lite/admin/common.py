"""Shared by the admin-plane handlers: wire rendering (epoch ms become ISO-8601), caller
authorisation for dual-auth endpoints, cursor paging, and the bulk-action safety gates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.auth import Principal
from runcycles_server_lite.errors import ProtocolError, invalid
from runcycles_server_lite.http import JSONResponse, raw_json_response, read_json
from runcycles_server_lite.keys import UNITS
from runcycles_server_lite.services import Services, services

from .models import (
    BudgetBulkAction,
    TenantBulkAction,
)

if TYPE_CHECKING:
    from runcycles_server_lite.webhooks.models import WebhookBulkAction

MAX_LIMIT = 100
DEFAULT_LIMIT = 50
MAX_SEARCH = 128

ADMIN_PRINCIPAL = Principal(tenant="", key_id="admin", permissions=frozenset(), is_admin=True)


# -- rendering -------------------------------------------------------------------------------
def iso(ms: str | int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with millisecond precision (``...T..:..:..sssZ``)."""
    if ms is None or ms == "":
        return None
    value = int(ms)
    dt = datetime.fromtimestamp(value // 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{value % 1000:03d}Z"


def to_ms(dt: datetime) -> int:
    """A datetime as epoch milliseconds (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def loads_or(raw: str | None, default: Any) -> Any:
    """Parse stored JSON, or ``default`` if it is absent or corrupt."""
    if not raw:
        return default
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return default


def amount_wire(unit: str, value: str | int | None) -> dict[str, Any]:
    """An ``Amount`` / ``SignedAmount`` object from a stored int64 string."""
    return {"unit": unit, "amount": int(value or 0)}


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """The mapping without its ``None`` values (optional fields stay absent)."""
    return {k: v for k, v in d.items() if v is not None}


def tenant_wire(r: Mapping[str, str]) -> dict[str, Any]:
    """A stored tenant record as the spec's Tenant object."""

    def num(field: str) -> int | None:
        return int(r[field]) if r.get(field) else None

    return drop_none(
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
            "metadata": loads_or(r.get("metadata_json"), None) or None,
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
    return drop_none(
        {
            "key_id": r["key_id"],
            "tenant_id": r["tenant_id"],
            "key_prefix": r.get("key_prefix"),
            "name": r.get("name"),
            "description": r.get("description"),
            "permissions": loads_or(r.get("permissions_json"), []),
            "scope_filter": loads_or(r.get("scope_filter_json"), None),
            "status": status,
            "created_at": iso(r.get("created_at")),
            "last_used_at": iso(r.get("last_used_at")),
            "expires_at": iso(r.get("expires_at")),
            "revoked_at": iso(r.get("revoked_at")),
            "revoked_reason": r.get("revoked_reason"),
            "metadata": loads_or(r.get("metadata_json"), None) or None,
        }
    )


def budget_wire(r: Mapping[str, str]) -> dict[str, Any]:
    """A stored budget hash as the spec's BudgetLedger object."""
    unit = r.get("unit", "")
    return drop_none(
        {
            "ledger_id": r.get("ledger_id", ""),
            "tenant_id": r.get("tenant_id"),
            "scope": r.get("scope", ""),
            "scope_path": r.get("scope", ""),
            "unit": unit,
            "allocated": amount_wire(unit, r.get("allocated")),
            "remaining": amount_wire(unit, r.get("remaining")),
            "reserved": amount_wire(unit, r.get("reserved")),
            "spent": amount_wire(unit, r.get("spent")),
            "debt": amount_wire(unit, r.get("debt")),
            "overdraft_limit": amount_wire(unit, r.get("overdraft_limit")),
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
        "previous_allocated": amount_wire(unit, res.previous_allocated),
        "new_allocated": amount_wire(unit, res.new_allocated),
        "previous_remaining": amount_wire(unit, res.previous_remaining),
        "new_remaining": amount_wire(unit, res.new_remaining),
        "previous_debt": amount_wire(unit, res.previous_debt),
        "new_debt": amount_wire(unit, res.new_debt),
        "previous_spent": amount_wire(unit, res.previous_spent),
        "new_spent": amount_wire(unit, res.new_spent),
        "timestamp": iso(res.timestamp_ms),
    }


# -- auth helpers ----------------------------------------------------------------------------
def require_admin(request: Request) -> Services:
    """The services, once the request is known to carry the admin key (401 otherwise)."""
    svc = services(request)
    svc.auth.require_admin(request)
    return svc


async def caller(request: Request, permission: str) -> tuple[Services, Principal]:
    """Dual-auth endpoints: the admin key (acting for any tenant) or a tenant key that holds
    ``permission`` (403 otherwise)."""
    svc = services(request)
    if svc.auth.is_admin(request):
        return svc, ADMIN_PRINCIPAL
    return svc, await svc.auth.tenant(request, permission)


def scope_tenant(scope: str | None) -> str:
    """The tenant a scope path belongs to (its leading ``tenant:<id>`` segment)."""
    if not scope:
        raise invalid("scope query parameter is required")
    level, sep, value = scope.strip().lower().split("/")[0].partition(":")
    if level != "tenant" or not sep or not value:
        raise invalid("scope must start with tenant:<tenant_id>", scope=scope)
    return value


def owned_scope(principal: Principal, scope: str | None) -> str:
    """The tenant owning ``scope``; a tenant key may only touch its own scopes (403)."""
    tenant = scope_tenant(scope)
    if not principal.is_admin and tenant != principal.tenant:
        raise ProtocolError("FORBIDDEN", "scope belongs to another tenant")
    return tenant


def unit_param(request: Request) -> str:
    """The required ``unit`` query parameter, validated."""
    unit = request.query_params.get("unit")
    if not unit:
        raise invalid("unit query parameter is required")
    if unit not in UNITS:
        raise invalid(f"unit must be one of {', '.join(UNITS)}", unit=unit)
    return unit


async def optional_body(request: Request) -> Any:
    """The JSON body, or ``{}`` when the request has none."""
    return await read_json(request, optional=True)


def metadata_json(metadata: Mapping[str, Any] | None) -> str:
    """A metadata object encoded for storage."""
    return orjson.dumps(dict(metadata or {})).decode()


# -- pagination ------------------------------------------------------------------------------
def bool_param(request: Request, name: str) -> bool | None:
    """An optional ``true``/``false`` query parameter (400 for anything else)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise invalid(f"{name} must be true or false")


def search_param(request: Request) -> str | None:
    """The lowercased ``search`` query parameter (400 above 128 characters)."""
    raw = request.query_params.get("search") or None
    if raw is not None and len(raw) > MAX_SEARCH:
        raise invalid(f"search must be at most {MAX_SEARCH} characters")
    return raw.lower() if raw else None


def page(
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


def field_key(name: str) -> Callable[[dict[str, Any]], Any]:
    """A sort key reading ``name`` from a wire row (missing sorts first)."""

    def key(row: dict[str, Any]) -> Any:
        return row.get(name) or ""

    return key


def contains(needle: str | None, *values: str | None) -> bool:
    """True if ``needle`` is absent or a substring of any value (case-insensitive)."""
    return needle is None or any(needle in (v or "").lower() for v in values)


BULK_MAX_ROWS = 500
BULK_IDEMPOTENCY_TTL_MS = 15 * 60 * 1000


async def replayable_bulk(
    svc: Services,
    endpoint: str,
    req: TenantBulkAction | BudgetBulkAction | WebhookBulkAction,
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


def bulk_gate(matched: int, expected: int | None) -> None:
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
