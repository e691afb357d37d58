"""Who is looking at the dashboard, and what they may do.

Two ways in: the headers the APIs use (``X-Admin-API-Key``, ``X-Cycles-API-Key``), for
scripts, or a session cookie from the login form, for browsers. Either way the caller ends up
as a :class:`Viewer` around the same :class:`~runcycles_server_lite.auth.Principal` the admin
API authorises with, and the permission checks are the admin API's: reading needs
``budgets:read``, funding the admin key or ``budgets:write`` on one's own tenant, freezing the
admin key.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from runcycles_server_lite import events
from runcycles_server_lite.admin_common import ADMIN_PRINCIPAL
from runcycles_server_lite.auth import (
    BUDGETS_READ,
    BUDGETS_WRITE,
    RESERVATIONS_LIST,
    Principal,
    client_ip,
)
from runcycles_server_lite.errors import ProtocolError
from runcycles_server_lite.keys import secret_digest
from runcycles_server_lite.services import services

from .session import ADMIN, TENANT, Session, Sessions

READ_PERMISSION = BUDGETS_READ


@dataclass(frozen=True, slots=True)
class Viewer:
    """An authenticated dashboard caller. ``session`` is None for header authentication."""

    principal: Principal
    session: Session | None

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin

    @property
    def label(self) -> str:
        if self.is_admin:
            return "admin"
        return f"{self.principal.tenant} ({self.principal.key_id})"

    def can_view(self, tenant: str) -> bool:
        return self.is_admin or tenant == self.principal.tenant

    def can_list_reservations(self, tenant: str) -> bool:
        return self.can_view(tenant) and self.principal.allows(RESERVATIONS_LIST)

    def can_fund(self, tenant: str) -> bool:
        """The admin API's fund rule: admin key, or budgets:write on one's own tenant."""
        return self.is_admin or (
            tenant == self.principal.tenant and self.principal.allows(BUDGETS_WRITE)
        )

    def can_freeze(self, tenant: str) -> bool:
        """Freeze and unfreeze are admin-key operations in the admin API."""
        return self.is_admin


def _as_admin(request: Request) -> None:
    # Events and audit entries written for this request name the admin as their actor.
    events.set_actor(events.Actor("admin", source_ip=client_ip(request)))
    request.scope.setdefault("state", {})["admin"] = True


def _as_tenant(request: Request, principal: Principal) -> None:
    events.set_actor(events.Actor("api_key", principal.key_id, client_ip(request)))
    state = request.scope.setdefault("state", {})
    state["tenant"] = principal.tenant
    state["key_id"] = principal.key_id


async def from_headers(request: Request) -> Viewer | None:
    """The viewer the API headers name; None without them. A wrong key is a 401 and a key
    without ``budgets:read`` a 403, as on the admin API (no fallback to the cookie)."""
    auth = services(request).auth
    if auth.is_admin(request):
        return Viewer(ADMIN_PRINCIPAL, None)
    if request.headers.get("x-cycles-api-key"):
        return Viewer(await auth.tenant(request, READ_PERMISSION), None)
    return None


async def from_session(request: Request, sessions: Sessions) -> Viewer | None:
    """The viewer of a live session cookie, or None. A tenant session re-checks its key on
    every request: once the key is revoked, expired or lacks ``budgets:read``, or its tenant
    is suspended, the session ends."""
    session = await sessions.load(request)
    if session is None:
        return None
    if session.kind == ADMIN:
        _as_admin(request)
        return Viewer(ADMIN_PRINCIPAL, session)
    if session.kind == TENANT:
        try:
            principal = await services(request).auth.resolve_digest(session.key_digest)
        except ProtocolError as exc:
            if exc.code != "UNAUTHORIZED":
                raise
            principal = None
        if (
            principal is not None
            and principal.key_id == session.key_id
            and principal.allows(READ_PERMISSION)
        ):
            _as_tenant(request, principal)
            return Viewer(principal, session)
    await sessions.end(session)
    return None


async def viewer(request: Request, sessions: Sessions) -> Viewer | None:
    """Headers first (a script's credentials), then the session cookie."""
    found = await from_headers(request)
    return found if found is not None else await from_session(request, sessions)


async def login(
    request: Request, sessions: Sessions, secret: str
) -> tuple[Viewer, str] | tuple[None, str]:
    """Check a key typed on the login form: (viewer, cookie value) or (None, why not)."""
    auth = services(request).auth
    secret = secret.strip()
    if not secret:
        return None, "Enter an admin key or a tenant API key."
    if auth.is_admin_secret(secret):
        _as_admin(request)
        session, cookie = await sessions.create(ADMIN)
        return Viewer(ADMIN_PRINCIPAL, session), cookie
    try:
        principal = await auth.resolve(secret)
    except ProtocolError as exc:
        if exc.code != "UNAUTHORIZED":
            raise
        await auth.record_failure(request, secret, exc.message)
        return None, "That key is not valid here."
    if not principal.allows(READ_PERMISSION):
        return None, f"That key lacks the {READ_PERMISSION} permission the dashboard needs."
    _as_tenant(request, principal)
    session, cookie = await sessions.create(
        TENANT, tenant=principal.tenant, key_id=principal.key_id, key_digest=secret_digest(secret)
    )
    return Viewer(principal, session), cookie
