"""Admin plane: ``/v1/auth/introspect`` and ``/v1/auth/validate``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.auth import Principal
from runcycles_server_lite.errors import ProtocolError, invalid
from runcycles_server_lite.http import JSONResponse, read_json
from runcycles_server_lite.services import services

from .common import (
    drop_none,
    iso,
    loads_or,
    require_admin,
)

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
    """GET /v1/auth/introspect: who is calling and the capabilities that follow."""
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
    """POST /v1/auth/validate: resolve a key secret to its tenant (admin only)."""
    svc = require_admin(request)
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
        scope_filter = loads_or(record.get("scope_filter_json"), None)
        if scope_filter is not None:
            body["scope_filter"] = scope_filter
        body["expires_at"] = iso(record.get("expires_at"))
    return JSONResponse(drop_none(body))
