"""Dashboard browser sessions: a signed, HttpOnly cookie naming a record kept in Redis.

The key a person types on the login form is checked once and never stored, neither in the
browser nor on the server: the record keeps who signed in (admin, or a tenant key's id and
digest, so the key is re-checked on every request and a revocation logs the session out), a
per-session CSRF token and a one-shot flash message. The cookie holds only a random session id
and its HMAC; Redis holds the record under the SHA-256 of that id, so neither a copy of the
store nor a forged cookie yields a usable session.

The signing key is derived from the admin key (rotating the admin key ends every session);
a server with no admin key keeps a random one in Redis, shared by all its workers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from runcycles_server_lite.store import Store

COOKIE = "rc_dashboard"
COOKIE_PATH = "/dashboard"
# Idle timeout (each authenticated request renews it) and absolute lifetime of a session.
IDLE_MS = 8 * 3600 * 1000
MAX_AGE_MS = 24 * 3600 * 1000

ADMIN = "admin"
TENANT = "tenant"


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser: ``kind`` is :data:`ADMIN` or :data:`TENANT`."""

    sid: str
    kind: str
    csrf: str
    created_ms: int
    tenant: str = ""
    key_id: str = ""
    key_digest: str = ""


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class Sessions:
    """Creates, signs, loads and ends sessions for one app (one store, one admin key)."""

    def __init__(self, store: Store, admin_api_key: str | None) -> None:
        self.store = store
        self._key: bytes | None = (
            hmac.new(admin_api_key.encode(), b"runcycles-dashboard-session-v1", "sha256").digest()
            if admin_api_key
            else None
        )

    async def _signing_key(self) -> bytes:
        if self._key is None:
            name = self.store.keys.dashboard_secret()
            await self.store.redis.set(name, secrets.token_hex(32), nx=True)
            self._key = bytes.fromhex(str(await self.store.redis.get(name)))
        return self._key

    async def _sign(self, sid: str) -> str:
        mac = hmac.new(await self._signing_key(), sid.encode(), "sha256").hexdigest()
        return f"{sid}.{mac}"

    async def _verify(self, cookie: str) -> str | None:
        sid, _, mac = cookie.partition(".")
        if not sid or not mac or len(sid) > 64:
            return None
        expected = hmac.new(await self._signing_key(), sid.encode(), "sha256").hexdigest()
        return sid if hmac.compare_digest(mac, expected) else None

    async def create(
        self, kind: str, *, tenant: str = "", key_id: str = "", key_digest: str = ""
    ) -> tuple[Session, str]:
        """A new session and the cookie value that names it."""
        now = await self.store.time_ms()
        session = Session(
            sid=secrets.token_urlsafe(32),
            kind=kind,
            csrf=secrets.token_urlsafe(32),
            created_ms=now,
            tenant=tenant,
            key_id=key_id,
            key_digest=key_digest,
        )
        record = {
            "kind": kind,
            "csrf": session.csrf,
            "created_at": str(now),
            "tenant": tenant,
            "key_id": key_id,
            "key_digest": key_digest,
        }
        name = self.store.keys.dashboard_session(_digest(session.sid))
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping=record)
            pipe.pexpire(name, IDLE_MS)
            await pipe.execute()
        return session, await self._sign(session.sid)

    async def load(self, request: Request) -> Session | None:
        """The live session the request's cookie names (renewing its idle timeout), or None."""
        raw = request.cookies.get(COOKIE)
        sid = await self._verify(raw) if raw else None
        if sid is None:
            return None
        name = self.store.keys.dashboard_session(_digest(sid))
        record: dict[str, str] = await self.store.redis.hgetall(name)
        if not record or record.get("kind") not in (ADMIN, TENANT):
            return None
        created = int(record.get("created_at") or 0)
        if created + MAX_AGE_MS <= await self.store.time_ms():
            await self.store.redis.delete(name)
            return None
        await self.store.redis.pexpire(name, IDLE_MS)
        return Session(
            sid=sid,
            kind=record["kind"],
            csrf=record.get("csrf", ""),
            created_ms=created,
            tenant=record.get("tenant", ""),
            key_id=record.get("key_id", ""),
            key_digest=record.get("key_digest", ""),
        )

    async def end(self, session: Session) -> None:
        await self.store.redis.delete(self.store.keys.dashboard_session(_digest(session.sid)))

    async def flash(self, session: Session, message: str, level: str = "ok") -> None:
        """Keep ``message`` for the next page this session renders."""
        name = self.store.keys.dashboard_session(_digest(session.sid))
        await self.store.redis.hset(name, mapping={"flash": message, "flash_level": level})

    async def pop_flash(self, session: Session) -> tuple[str, str] | None:
        """The pending (message, level), removed so it shows once."""
        name = self.store.keys.dashboard_session(_digest(session.sid))
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(name, ["flash", "flash_level"])
            pipe.hdel(name, "flash", "flash_level")
            (message, level), _ = await pipe.execute()
        return (str(message), str(level or "ok")) if message else None


def csrf_ok(session: Session, supplied: str | None) -> bool:
    """The form's CSRF token matches the session's (constant time)."""
    return bool(supplied) and hmac.compare_digest(str(supplied), session.csrf)


def same_origin(request: Request) -> bool:
    """The browser says the request comes from this server's own pages.

    Browsers send ``Origin`` on every POST; without one, ``Referer`` must point here. A
    request with neither is refused: a write through the cookie needs proof of where it came
    from as well as the CSRF token.
    """
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == own
    referer = request.headers.get("referer")
    return referer is not None and (referer == own or referer.startswith(own + "/"))


def set_cookie(response: Response, request: Request, value: str) -> None:
    """The session cookie: a browser-session cookie (no Max-Age), HttpOnly, SameSite=Strict,
    Secure when served over https, sent only to ``/dashboard``."""
    response.set_cookie(
        COOKIE,
        value,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
