"""Admin plane: API keys (create with a one-time secret, list, patch, revoke)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.errors import ProtocolError, invalid
from runcycles_server_lite.http import JSONResponse, read_json
from runcycles_server_lite.services import Services

from .common import (
    contains,
    drop_none,
    field_key,
    iso,
    key_wire,
    loads_or,
    metadata_json,
    page,
    require_admin,
    search_param,
    to_ms,
)
from .models import (
    ApiKeyCreate,
    ApiKeyUpdate,
    parse,
)


# -- API keys --------------------------------------------------------------------------------
async def create_api_key(request: Request) -> Response:
    """POST /v1/admin/api-keys: mint a key; the secret is in this response only."""
    svc = require_admin(request)
    req = parse(ApiKeyCreate, await read_json(request))
    expires_ms = to_ms(req.expires_at) if req.expires_at is not None else None
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
    body = drop_none(
        {
            "key_id": created.key_id,
            "key_secret": created.secret,
            "key_prefix": r["key_prefix"],
            "tenant_id": r["tenant_id"],
            "permissions": loads_or(r["permissions_json"], []),
            "created_at": iso(r["created_at"]),
            "expires_at": iso(r["expires_at"]),
        }
    )
    return JSONResponse(body, status_code=201)


async def list_api_keys(request: Request) -> Response:
    """GET /v1/admin/api-keys: one tenant or all, filtered and paged."""
    svc = require_admin(request)
    q = request.query_params
    tenant_id = q.get("tenant_id") or None
    status = q.get("status") or None
    if status is not None and status not in ("ACTIVE", "REVOKED", "EXPIRED"):
        raise invalid("status must be ACTIVE, REVOKED or EXPIRED")
    search = search_param(request)
    now = await svc.store.time_ms()
    rows = [
        key_wire(r, now)
        for r in await prov.list_api_keys(svc.store, tenant_id)
        if contains(search, r.get("key_id"), r.get("name"))
    ]
    if status is not None:
        rows = [k for k in rows if k["status"] == status]
    sort_keys = {
        name: field_key(name)
        for name in ("key_id", "name", "tenant_id", "status", "created_at", "expires_at")
    }
    filters = {"tenant_id": tenant_id, "status": status, "search": search}
    return page(request, rows, sort_keys, filters, "keys")


async def _key_record(svc: Services, key_id: str) -> dict[str, str]:
    record = await prov.find_api_key(svc.store, key_id)
    if record is None:
        raise ProtocolError("NOT_FOUND", f"API key {key_id} not found")
    return record


async def update_api_key(request: Request) -> Response:
    """PATCH /v1/admin/api-keys/{key_id}: name, description, permissions, scope filter, metadata."""
    svc = require_admin(request)
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
        fields["metadata_json"] = metadata_json(req.metadata)
    updated = await prov.update_api_key(svc.store, record["tenant_id"], record["key_id"], fields)
    svc.auth.invalidate(record["key_hash"])
    return JSONResponse(key_wire(updated, await svc.store.time_ms()))


async def revoke_api_key(request: Request) -> Response:
    """DELETE /v1/admin/api-keys/{key_id}: revoke (kept for the record)."""
    svc = require_admin(request)
    reason = request.query_params.get("reason") or None
    if reason is not None and len(reason) > 512:
        raise invalid("reason must be at most 512 characters")
    record = await _key_record(svc, request.path_params["key_id"])
    revoked = await prov.revoke_api_key(svc.store, record["tenant_id"], record["key_id"], reason)
    # Revocation bites at once in this process; other workers follow within the cache TTL.
    svc.auth.invalidate(record["key_hash"])
    return JSONResponse(key_wire(revoked, await svc.store.time_ms()))
