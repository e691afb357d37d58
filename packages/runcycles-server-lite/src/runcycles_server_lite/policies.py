"""Admin plane: policies (``/v1/admin/policies``), stored and listed like the reference's.

Like the reference server, the runtime does not evaluate policies yet: they are kept so that
provisioning written for the reference works unchanged and dashboards can show them. Records
are JSON owned by Python (never decoded in Lua), in the tenant's ``policies`` hash.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, StrictInt, StrictStr
from starlette.requests import Request
from starlette.responses import Response

from .admin.common import caller, iso, page
from .admin.models import OveragePolicy, TtlMs, _Model, parse
from .auth import POLICIES_READ, POLICIES_WRITE
from .errors import ProtocolError, invalid
from .http import JSONResponse, read_json
from .services import Services
from .store import Store


class PolicyCaps(_Model):
    max_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    max_steps_remaining: Annotated[StrictInt, Field(ge=0)] | None = None
    tool_allowlist: list[Annotated[StrictStr, Field(max_length=256)]] | None = None
    tool_denylist: list[Annotated[StrictStr, Field(max_length=256)]] | None = None
    cooldown_ms: Annotated[StrictInt, Field(ge=0)] | None = None


class TtlOverride(_Model):
    default_ttl_ms: TtlMs | None = None
    max_ttl_ms: TtlMs | None = None
    max_extensions: Annotated[StrictInt, Field(ge=0)] | None = None


class RateLimits(_Model):
    max_reservations_per_minute: Annotated[StrictInt, Field(ge=1)] | None = None
    max_commits_per_minute: Annotated[StrictInt, Field(ge=1)] | None = None


class _PolicyFields(_Model):
    description: Annotated[StrictStr, Field(max_length=1024)] | None = None
    priority: Annotated[StrictInt, Field(ge=0)] | None = None
    caps: PolicyCaps | None = None
    commit_overage_policy: OveragePolicy | None = None
    reservation_ttl_override: TtlOverride | None = None
    rate_limits: RateLimits | None = None
    effective_from: datetime | None = None
    effective_until: datetime | None = None


class PolicyCreate(_PolicyFields):
    tenant_id: StrictStr | None = None
    name: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    scope_pattern: Annotated[StrictStr, Field(min_length=1, max_length=1024)]


class PolicyUpdate(_PolicyFields):
    name: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    status: Literal["ACTIVE", "DISABLED"] | None = None


def _wire_fields(model: _PolicyFields) -> dict[str, Any]:
    # JSON-mode dump: datetimes become ISO-8601 strings, unset fields stay absent.
    return model.model_dump(mode="json", exclude_none=True, exclude={"tenant_id"})


async def _save(store: Store, tenant: str, mode: str, record: dict[str, Any], old: str) -> None:
    from . import events
    from .provisioning import _script_ok

    keys = [
        store.keys.tenant(tenant),
        store.keys.policies(tenant),
        store.keys.policy_names(tenant),
        store.keys.events(tenant),
    ]
    args = [
        mode,
        record["policy_id"],
        record["name"],
        orjson.dumps(record).decode(),
        old,
        str(record.get("scope_pattern") or ""),
        events.context(tenant, source=events.SOURCE_ADMIN),
    ]
    _script_ok(await store.run("policy_save", keys, args))


async def create_policy(request: Request) -> Response:
    """POST /v1/admin/policies: admin key with tenant_id, or a tenant key with policies:write."""
    svc, principal = await caller(request, POLICIES_WRITE)
    req = parse(PolicyCreate, await read_json(request))
    if principal.is_admin:
        if not req.tenant_id:
            raise invalid("tenant_id is required when creating a policy with the admin key")
        tenant = req.tenant_id
    else:
        if req.tenant_id is not None:
            raise invalid("tenant_id must not be sent with a tenant API key")
        tenant = principal.tenant
    _check_window(req.effective_from, req.effective_until)
    now = iso(await svc.store.time_ms())
    record: dict[str, Any] = {
        "policy_id": "pol_" + uuid.uuid4().hex[:20],
        "tenant_id": tenant,
        "name": req.name,
        "scope_pattern": req.scope_pattern.strip(),
        "priority": 0,
        **_wire_fields(req),
        "status": "ACTIVE",
        "created_at": now,
        "updated_at": now,
    }
    try:
        await _save(svc.store, tenant, "create", record, "")
    except ProtocolError as exc:
        if exc.code == "TENANT_NOT_FOUND":
            exc.status = 400
        raise
    await svc.store.redis.set(svc.store.keys.policy_owner(record["policy_id"]), tenant)
    return JSONResponse(_public(record), status_code=201)


def _check_window(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise invalid("effective_until must be after effective_from")


def _public(record: dict[str, Any]) -> dict[str, Any]:
    # The Policy schema has no tenant_id; it is kept in storage for ownership checks.
    return {k: v for k, v in record.items() if k != "tenant_id"}


async def _load_all(svc: Services, tenant: str) -> list[dict[str, Any]]:
    raw: dict[str, str] = await svc.store.redis.hgetall(svc.store.keys.policies(tenant))
    return [orjson.loads(v) for v in raw.values()]


async def list_policies(request: Request) -> Response:
    """GET /v1/admin/policies: one tenant's policies, highest priority first."""
    svc, principal = await caller(request, POLICIES_READ)
    q = request.query_params
    if principal.is_admin:
        tenant = q.get("tenant_id")
        if not tenant:
            raise invalid("tenant_id query parameter is required with the admin key")
    else:
        tenant = principal.tenant
    pattern = q.get("scope_pattern") or None
    status = q.get("status") or None
    if status is not None and status not in ("ACTIVE", "DISABLED"):
        raise invalid("status must be ACTIVE or DISABLED")
    rows = [
        _public(p)
        for p in await _load_all(svc, tenant)
        if (pattern is None or p["scope_pattern"] == pattern)
        and (status is None or p["status"] == status)
    ]
    # Highest priority first (the order they apply in), then oldest.
    rows.sort(key=lambda p: (-int(p.get("priority", 0)), p["created_at"], p["policy_id"]))
    filters = {"tenant_id": tenant, "scope_pattern": pattern, "status": status}
    return page(request, rows, {}, filters, "policies")


async def update_policy(request: Request) -> Response:
    """PATCH /v1/admin/policies/{policy_id}: by its owner or the admin key."""
    svc, principal = await caller(request, POLICIES_WRITE)
    policy_id = request.path_params["policy_id"]
    req = parse(PolicyUpdate, await read_json(request))
    owner: str | None = await svc.store.redis.get(svc.store.keys.policy_owner(policy_id))
    if owner is None or (not principal.is_admin and owner != principal.tenant):
        # Another tenant's policy is reported as absent, not as forbidden: ids don't leak.
        raise ProtocolError("NOT_FOUND", f"policy {policy_id} not found")
    raw: str | None = await svc.store.redis.hget(svc.store.keys.policies(owner), policy_id)
    if raw is None:
        raise ProtocolError("NOT_FOUND", f"policy {policy_id} not found")
    record: dict[str, Any] = orjson.loads(raw)
    old_name = record["name"]
    record.update(req.model_dump(mode="json", exclude_none=True))
    start = record.get("effective_from")
    end = record.get("effective_until")
    _check_window(
        datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None,
        datetime.fromisoformat(end.replace("Z", "+00:00")) if end else None,
    )
    record["updated_at"] = iso(await svc.store.time_ms())
    await _save(svc.store, owner, "update", record, old_name)
    return JSONResponse(_public(record))
