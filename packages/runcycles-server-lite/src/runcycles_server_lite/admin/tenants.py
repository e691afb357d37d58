"""Admin plane: tenants (create idempotently, get, list, patch with the close cascade,
bulk lifecycle actions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.errors import ProtocolError, invalid
from runcycles_server_lite.http import JSONResponse, read_json
from runcycles_server_lite.services import Services

from .common import (
    bulk_gate,
    contains,
    loads_or,
    metadata_json,
    page,
    replayable_bulk,
    require_admin,
    search_param,
    tenant_wire,
)
from .models import (
    TenantBulkAction,
    TenantCreate,
    TenantUpdate,
    parse,
)

_BULK_TARGET = {"SUSPEND": "SUSPENDED", "REACTIVATE": "ACTIVE", "CLOSE": "CLOSED"}


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
    """POST /v1/admin/tenants: 201 created, 200 for a retry of the same tenant, 409 for a
    different one under the same id."""
    svc = require_admin(request)
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
    if req.metadata is not None and loads_or(record.get("metadata_json"), {}) != req.metadata:
        conflicts.append("metadata")
    if conflicts:
        raise ProtocolError(
            "DUPLICATE_RESOURCE",
            f"tenant {req.tenant_id} already exists with different {', '.join(conflicts)}",
            details={"tenant_id": req.tenant_id, "conflicting_fields": conflicts},
        )
    return JSONResponse(tenant_wire(record), status_code=200)


async def get_tenant(request: Request) -> Response:
    """GET /v1/admin/tenants/{tenant_id}."""
    svc = require_admin(request)
    tenant_id = request.path_params["tenant_id"]
    record = await prov.get_tenant(svc.store, tenant_id)
    if record is None:
        raise ProtocolError("TENANT_NOT_FOUND", f"tenant {tenant_id} not found")
    return JSONResponse(tenant_wire(record))


async def list_tenants(request: Request) -> Response:
    """GET /v1/admin/tenants: filtered by status, parent and search; paged."""
    svc = require_admin(request)
    q = request.query_params
    status = q.get("status") or None
    if status is not None and status not in ("ACTIVE", "SUSPENDED", "CLOSED"):
        raise invalid("status must be ACTIVE, SUSPENDED or CLOSED")
    parent = q.get("parent_tenant_id") or None
    search = search_param(request)
    rows = [
        tenant_wire(r)
        for r in await prov.list_tenants(svc.store)
        if (status is None or r.get("status") == status)
        and (parent is None or r.get("parent_tenant_id") == parent)
        and contains(search, r.get("tenant_id"), r.get("name"))
    ]
    sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        "tenant_id": lambda t: t["tenant_id"],
        "name": lambda t: t.get("name", ""),
        "status": lambda t: t["status"],
        "created_at": lambda t: t.get("created_at", ""),
    }
    filters = {"status": status, "parent": parent, "search": search}
    return page(request, rows, sort_keys, filters, "tenants")


async def update_tenant(request: Request) -> Response:
    """PATCH /v1/admin/tenants/{tenant_id}: fields and status; closing runs the cascade."""
    svc = require_admin(request)
    tenant_id = request.path_params["tenant_id"]
    req = parse(TenantUpdate, await read_json(request))
    fields: dict[str, str] = {}
    if req.name is not None:
        fields["name"] = req.name
    if req.metadata is not None:
        fields["metadata_json"] = metadata_json(req.metadata)
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


async def bulk_action_tenants(request: Request) -> Response:
    """POST /v1/admin/tenants/bulk-action: SUSPEND / REACTIVATE / CLOSE every tenant matching
    a filter, gated by expected_count and a 500-row cap, replayable for 15 minutes."""
    svc = require_admin(request)
    req = parse(TenantBulkAction, await read_json(request))
    f = req.filter
    if f.status is None and f.parent_tenant_id is None and not f.search:
        raise invalid("filter must name at least one of status, parent_tenant_id, search")
    return await replayable_bulk(svc, "tenants-bulk", req, lambda: _run_bulk(svc, req))


async def _run_bulk(svc: Services, req: TenantBulkAction) -> dict[str, Any]:
    f = req.filter
    search = f.search.lower() if f.search else None
    matched = [
        t
        for t in await prov.list_tenants(svc.store)
        if (f.status is None or t.get("status") == f.status)
        and (f.parent_tenant_id is None or t.get("parent_tenant_id") == f.parent_tenant_id)
        and contains(search, t.get("tenant_id"), t.get("name"))
    ]
    bulk_gate(len(matched), req.expected_count)
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
