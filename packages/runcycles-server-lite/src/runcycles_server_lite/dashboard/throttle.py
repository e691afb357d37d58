"""Failed dashboard sign-ins, counted per client address in Redis.

Keys are long random strings, so guessing one is hopeless; the limit is there for admin keys a
person chose, and so that a script hammering the form costs it minutes, not the server CPU.
Counting in Redis makes the limit hold across every worker. A successful sign-in clears the
address's count, so a few typos before the right key do not linger.
"""

from __future__ import annotations

import math

from runcycles_server_lite.store import Store

# At most LIMIT failures per address within WINDOW_MS, counted from the first failure.
LIMIT = 10
WINDOW_MS = 5 * 60 * 1000


class LoginThrottle:
    """Counts failed sign-ins per address; ``retry_after`` says when one may try again."""

    def __init__(self, store: Store, limit: int = LIMIT, window_ms: int = WINDOW_MS) -> None:
        self.store = store
        self.limit = limit
        self.window_ms = window_ms

    def _key(self, client: str | None) -> str:
        return self.store.keys.dashboard_login_failures(client or "unknown")

    async def retry_after(self, client: str | None) -> int | None:
        """Seconds until ``client`` may try again, or None if it may try now."""
        key = self._key(client)
        count = await self.store.redis.get(key)
        if count is None or int(count) < self.limit:
            return None
        ttl_ms = int(await self.store.redis.pttl(key))
        return max(1, math.ceil(ttl_ms / 1000)) if ttl_ms > 0 else None

    async def failed(self, client: str | None) -> None:
        key = self._key(client)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            # SET NX PX starts the window at the first failure; INCR keeps that expiry.
            pipe.set(key, 0, px=self.window_ms, nx=True)
            pipe.incr(key)
            await pipe.execute()

    async def succeeded(self, client: str | None) -> None:
        await self.store.redis.delete(self._key(client))
