"""Connection to Redis and the Lua script registry.

Every mutation is one EVALSHA of a script shipped as package data under ``scripts/``.
``scripts/lib.lua`` (shared helpers) is prepended to each script before it is registered;
redis-py's Script objects fall back to EVAL/SCRIPT LOAD on NOSCRIPT (after a restart or a
failover), so callers never see that error.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError

from .keys import Keys

if TYPE_CHECKING:
    from .webhooks.sealing import SecretBox

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def connect(url: str, *, max_connections: int = 256) -> aioredis.Redis | RedisCluster:
    """An asyncio client for ``url``.

    ``redis://``, ``rediss://`` and ``unix://`` select a single server;
    ``redis+cluster://`` / ``rediss+cluster://`` (or ``?cluster=true``) select Redis Cluster.
    """
    parts = urlsplit(url)
    cluster = parts.scheme in _CLUSTER_SCHEMES or "cluster=true" in parts.query
    if cluster:
        scheme = _CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
        query = "&".join(q for q in parts.query.split("&") if q and q != "cluster=true")
        plain = urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))
        return RedisCluster.from_url(plain, decode_responses=True)
    # A blocking pool queues callers once every connection is busy; the default pool raises
    # "Too many connections" instead, which surfaced as 503s under bursts of requests.
    # A pooled connection found dead when next used (the store restarted, or the network
    # reset it while it sat idle) is reconnected and the command sent again, up to twice:
    # without this every such connection answered one request with a 503 long after the store
    # was back (tests in chaos/). Re-sending is safe: every ledger write carries its own
    # idempotency key or state check, as a client's retry would. Timeouts are not retried.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        timeout=10,
        retry=Retry(
            ExponentialBackoff(cap=0.2, base=0.02), 2, supported_errors=(RedisConnectionError,)
        ),
        retry_on_error=[RedisConnectionError],
    )
    return aioredis.Redis.from_pool(pool)


def _script_text(name: str) -> str:
    pkg = resources.files("runcycles_server_lite") / "scripts"
    body = (pkg / f"{name}.lua").read_text(encoding="utf-8")
    lib = pkg / "lib.lua"
    if lib.is_file():
        return lib.read_text(encoding="utf-8") + "\n" + body
    return body


class Store:
    """Redis client + key builder + registered scripts, shared by every request."""

    def __init__(self, client: aioredis.Redis | RedisCluster, keys: Keys) -> None:
        # Typed as Any on purpose: redis-py types every reply as bytes | str even with
        # decode_responses=True; callers annotate what they receive instead of casting.
        self.redis: Any = client
        self.keys = keys
        self._scripts: dict[str, AsyncScript] = {}
        # Seals webhook signing secrets at rest (webhooks/sealing.py); None: stored as given.
        self.secret_box: SecretBox | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "rc") -> Store:
        return cls(connect(url), Keys(prefix))

    def script(self, name: str) -> AsyncScript:
        """The registered script ``scripts/<name>.lua`` (loaded once per process)."""
        s = self._scripts.get(name)
        if s is None:
            s = self.redis.register_script(_script_text(name))
            self._scripts[name] = s
        return s

    async def run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """EVALSHA ``scripts/<name>.lua`` with ``keys`` and ``args``."""
        return await self.script(name)(keys=list(keys), args=list(args))

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def time_ms(self) -> int:
        """Redis server time in epoch milliseconds (the only clock the ledger trusts)."""
        sec, usec = await self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    async def close(self) -> None:
        await self.redis.aclose()
