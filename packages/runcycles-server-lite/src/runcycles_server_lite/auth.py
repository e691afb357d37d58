"""API-key and admin-key authentication.

A tenant key (``X-Cycles-API-Key``) resolves to exactly one tenant. Secrets are never stored:
``P:apikey:lookup:<sha256(secret)>`` maps the digest to ``"<tenant>\\n<key_id>"`` and the key
record lives in the tenant's slot. Resolutions are cached in-process for a short time (the
upper bound on revocation lag); a store outage is a 503, never a 401.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

import orjson
from starlette.requests import Request

from . import events
from .errors import ProtocolError
from .keys import secret_digest
from .store import Store

# Runtime permissions from the admin spec's Permission enum.
RESERVATIONS_CREATE = "reservations:create"
RESERVATIONS_COMMIT = "reservations:commit"
RESERVATIONS_RELEASE = "reservations:release"
RESERVATIONS_EXTEND = "reservations:extend"
RESERVATIONS_LIST = "reservations:list"
BALANCES_READ = "balances:read"
BUDGETS_READ = "budgets:read"
BUDGETS_WRITE = "budgets:write"

POLICIES_READ = "policies:read"
POLICIES_WRITE = "policies:write"

# What a key gets when it is created without an explicit permission list: the admin spec's
# default tenant set (webhooks:* and events:read must be granted explicitly).
DEFAULT_PERMISSIONS: tuple[str, ...] = (
    RESERVATIONS_CREATE,
    RESERVATIONS_COMMIT,
    RESERVATIONS_RELEASE,
    RESERVATIONS_EXTEND,
    RESERVATIONS_LIST,
    BALANCES_READ,
    BUDGETS_READ,
    BUDGETS_WRITE,
    POLICIES_READ,
    POLICIES_WRITE,
)

# Least privilege for an agent: the runtime plane only (reserve, settle, extend, list its
# reservations, read balances), so a leaked agent key cannot raise a budget or loosen a
# policy. What the admin CLI's ``key create`` mints unless told otherwise.
AGENT_PERMISSIONS: tuple[str, ...] = (
    RESERVATIONS_CREATE,
    RESERVATIONS_COMMIT,
    RESERVATIONS_RELEASE,
    RESERVATIONS_EXTEND,
    RESERVATIONS_LIST,
    BALANCES_READ,
)

# Named permission sets for key creation: ``agent`` above, ``operator`` the spec's default.
KEY_PROFILES: dict[str, tuple[str, ...]] = {
    "agent": AGENT_PERMISSIONS,
    "operator": DEFAULT_PERMISSIONS,
}

_CACHE_MAX = 10_000
_AUTH_FAILED_KEEP = 100_000


def client_ip(request: Request) -> str | None:
    """The peer address of ``request`` (the proxy's, unless uvicorn trusts forwarded headers)."""
    return request.client.host if request.client else None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant key, or the admin key acting on behalf of a tenant."""

    tenant: str
    key_id: str
    permissions: frozenset[str]
    is_admin: bool = False

    def allows(self, permission: str) -> bool:
        if self.is_admin or permission in self.permissions:
            return True
        # Wildcards per the admin spec: admin:write covers *:write, admin:read covers *:read.
        if permission.endswith(":write"):
            return "admin:write" in self.permissions
        if permission.endswith(":read"):
            return "admin:read" in self.permissions or "admin:write" in self.permissions
        return False


def _unauthorized(message: str) -> ProtocolError:
    return ProtocolError("UNAUTHORIZED", message)


class Authenticator:
    """Resolves request credentials to a :class:`Principal`."""

    def __init__(self, store: Store, admin_api_key: str | None, cache_ttl_s: float = 2.0) -> None:
        self.store = store
        self._admin_digest = secret_digest(admin_api_key).encode() if admin_api_key else None
        self.cache_ttl_s = cache_ttl_s
        # digest -> (expires_monotonic, principal)
        self._cache: dict[str, tuple[float, Principal]] = {}

    # -- admin ----------------------------------------------------------------------------
    @property
    def admin_enabled(self) -> bool:
        return self._admin_digest is not None

    def is_admin_secret(self, supplied: str) -> bool:
        """True if ``supplied`` is the admin key (constant-time; False when none is set)."""
        if self._admin_digest is None:
            return False
        return hmac.compare_digest(secret_digest(supplied).encode(), self._admin_digest)

    def is_admin(self, request: Request) -> bool:
        """True if the request carries the correct ``X-Admin-API-Key``; 401 if it carries a
        wrong one (no fallthrough to tenant auth)."""
        supplied = request.headers.get("x-admin-api-key")
        if supplied is None:
            return False
        if self._admin_digest is None:
            raise _unauthorized("admin API key is not configured on this server")
        if not hmac.compare_digest(secret_digest(supplied).encode(), self._admin_digest):
            raise _unauthorized("invalid admin API key")
        events.set_actor(events.Actor("admin", source_ip=client_ip(request)))
        return True

    def require_admin(self, request: Request) -> None:
        if not self.is_admin(request):
            raise _unauthorized("missing X-Admin-API-Key header")

    # -- tenant keys ----------------------------------------------------------------------
    def invalidate(self, secret_or_digest: str | None = None) -> None:
        """Drop cached resolutions (all, or one), e.g. after a key is revoked locally."""
        if secret_or_digest is None:
            self._cache.clear()
        else:
            self._cache.pop(secret_or_digest, None)
            self._cache.pop(secret_digest(secret_or_digest), None)

    async def tenant(self, request: Request, permission: str | None = None) -> Principal:
        """The tenant principal for ``X-Cycles-API-Key``, checked for ``permission``."""
        secret = request.headers.get("x-cycles-api-key")
        if not secret:
            raise _unauthorized("missing X-Cycles-API-Key header")
        try:
            principal = await self.resolve(secret)
        except ProtocolError as exc:
            if exc.code == "UNAUTHORIZED":
                await self._auth_failed(request, secret, exc.message)
            raise
        events.set_actor(events.Actor("api_key", principal.key_id, client_ip(request)))
        # Known before the permission check, so a 403 is attributed to its tenant and key.
        state = request.scope.setdefault("state", {})
        state["tenant"] = principal.tenant
        state["key_id"] = principal.key_id
        if permission is not None and not principal.allows(permission):
            raise ProtocolError(
                "FORBIDDEN", f"API key {principal.key_id} lacks permission {permission}"
            )
        return principal

    async def record_failure(self, request: Request, secret: str, message: str) -> None:
        """The ``api_key.auth_failed`` event for a key refused outside the header path (the
        dashboard's login form), exactly as :meth:`tenant` records one."""
        await self._auth_failed(request, secret, message)

    async def _auth_failed(self, request: Request, secret: str, message: str) -> None:
        """api_key.auth_failed, in the key's tenant stream when the key is ours (revoked,
        expired, suspended tenant), else in the system stream. Capped by length, since
        anyone can produce these."""
        keys = self.store.keys
        try:
            pointer = await self.store.redis.get(keys.api_key_lookup(secret_digest(secret)))
            tenant, _, key_id = str(pointer or "").partition("\n")
            reason = "key_not_found"
            for word, why in (("revoked", "key_revoked"), ("expired", "key_expired")):
                if word in message:
                    reason = why
            if "suspended" in message:
                reason = "tenant_suspended"
            data = {"failure_reason": reason}
            ip = client_ip(request)
            if ip:
                data["source_ip"] = ip
            if key_id:
                data["key_id"] = key_id
            owner = tenant if pointer else events.SYSTEM_TENANT
            body = events.envelope_body(
                "api_key.auth_failed",
                events.context(owner, actor=events.Actor("api_key", key_id or None, ip)),
                data=data,
            )
            # Anyone can produce these in the system stream: it is capped by length (tenant
            # streams only by retention, as trimming by length would drop other events).
            cap = _AUTH_FAILED_KEEP if owner == events.SYSTEM_TENANT else None
            await self.store.redis.xadd(
                keys.events(owner), {"e": body}, maxlen=cap, approximate=True
            )
        except Exception:  # the 401 stands even if its event cannot be written
            return

    async def resolve(self, secret: str) -> Principal:
        return await self.resolve_digest(secret_digest(secret))

    async def resolve_digest(self, digest: str) -> Principal:
        """:meth:`resolve` for a key known only by its digest (a dashboard session keeps the
        digest, never the secret, and re-checks the key on every request)."""
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self._load(digest)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + self.cache_ttl_s, principal)
        return principal

    async def _load(self, digest: str) -> Principal:
        keys = self.store.keys
        r = self.store.redis
        pointer = await r.get(keys.api_key_lookup(digest))
        if not pointer:
            raise _unauthorized("invalid API key")
        tenant, _, key_id = str(pointer).partition("\n")
        record, tenant_status = await _key_and_tenant(self.store, tenant, key_id)
        if not record:
            raise _unauthorized("invalid API key")
        status = record.get("status", "ACTIVE")
        if status != "ACTIVE":
            raise _unauthorized(f"API key is {status.lower()}")
        expires_at = record.get("expires_at")
        if expires_at and int(expires_at) <= await self.store.time_ms():
            raise _unauthorized("API key has expired")
        if tenant_status is None:
            raise _unauthorized("API key's tenant does not exist")
        if tenant_status == "SUSPENDED":
            raise _unauthorized("tenant is suspended")
        # Closing a tenant revokes its keys (admin cascade), but a key that is still live
        # (admitted before the cascade reached it) authenticates: reads keep working and every
        # persisting call answers 409 TENANT_CLOSED from inside its script, as the protocol's
        # guard requires.
        try:
            perms = orjson.loads(record.get("permissions_json") or "[]")
        except orjson.JSONDecodeError:
            perms = []
        return Principal(tenant=tenant, key_id=key_id, permissions=frozenset(perms))


async def _key_and_tenant(
    store: Store, tenant: str, key_id: str
) -> tuple[dict[str, str], str | None]:
    # Both keys share the tenant's slot: one pipelined round trip.
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(store.keys.api_key(tenant, key_id))
        pipe.hget(store.keys.tenant(tenant), "status")
        record, status = await pipe.execute()
    return dict(record or {}), status
