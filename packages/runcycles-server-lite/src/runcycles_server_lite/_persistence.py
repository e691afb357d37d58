"""What an external Redis does with the ledger on restart: its persistence settings, checked
once at start-up (refusing a volatile store unless told otherwise) and reported by health.

``CONFIG GET append*`` gives the AOF switch and its fsync policy. Managed services often
disable CONFIG; then ``INFO persistence`` still tells whether AOF is on, not the fsync policy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

log = logging.getLogger("runcycles_server_lite.persistence")

ALLOW_VOLATILE_ENV = "RUNCYCLES_ALLOW_VOLATILE_STORE"
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True, slots=True)
class Persistence:
    """A Redis server's durability settings; ``None`` where the server would not say."""

    aof: bool | None
    fsync: str | None
    # "config" (CONFIG GET answered) or "info" (CONFIG disabled; INFO persistence fallback).
    source: str

    def details(self) -> dict[str, Any]:
        """The health endpoint's view: ``aof``, ``appendfsync`` and where they came from."""
        return {"aof": self.aof, "appendfsync": self.fsync, "source": self.source}


def from_replies(config: dict[str, str] | None, info: dict[str, Any] | None) -> Persistence:
    """Interpret a ``CONFIG GET append*`` reply, or failing that an ``INFO persistence`` one."""
    if config and "appendonly" in config:
        fsync = config.get("appendfsync") or None
        return Persistence(config["appendonly"] == "yes", fsync, "config")
    aof = info.get("aof_enabled") if info else None
    return Persistence(None if aof is None else str(aof) == "1", None, "info")


def probe(client: redis.Redis) -> Persistence:
    """Ask ``client``'s server (a blocking client) for its persistence settings."""
    config: dict[str, str] | None = None
    try:
        reply: Any = client.config_get("append*")
        config = reply if isinstance(reply, dict) and "appendonly" in reply else None
    except redis.ResponseError as exc:  # CONFIG renamed, disabled or not permitted
        log.debug("CONFIG GET refused (%s); falling back to INFO persistence", exc)
    info = None if config else client.info("persistence")
    return from_replies(config, info)


async def probe_async(client: Any) -> Persistence:
    """:func:`probe` for an asyncio client (the health endpoint's)."""
    config: dict[str, str] | None = None
    try:
        reply = await client.config_get("append*")
        config = reply if isinstance(reply, dict) and "appendonly" in reply else None
    except redis.ResponseError:
        config = None
    info = None if config else await client.info("persistence")
    return from_replies(config, info)


def _node_url(url: str) -> str:
    # A Cluster URL names a seed node; the check talks to that node alone.
    parts = urlsplit(url)
    if parts.scheme not in _CLUSTER_SCHEMES and "cluster=true" not in parts.query:
        return url
    scheme = _CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    query = "&".join(q for q in parts.query.split("&") if q and q != "cluster=true")
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))


def _redacted(url: str) -> str:
    # Never print a password from the URL.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + netloc, parts.path, parts.query, parts.fragment))


def volatile_message(url: str) -> str:
    """Why serving on a store without AOF is refused, what would be lost, and the fixes."""
    url = _redacted(url)
    return (
        f"refusing to serve: the Redis at {url} has append-only persistence off "
        "(appendonly no). When it restarts or fails over, every budget, balance, reservation "
        "and API key written since its last RDB snapshot (all of them if snapshots are off) "
        "is lost: spend already charged is forgotten and budgets can be overspent.\n"
        "Fix it on that Redis:\n"
        "  redis-cli CONFIG SET appendonly yes\n"
        "  redis-cli CONFIG REWRITE      # or put `appendonly yes` in redis.conf\n"
        "or, for a scratch store you can afford to lose, start with --allow-volatile-store "
        f"({ALLOW_VOLATILE_ENV}=1)."
    )


def check_store(url: str, *, allow_volatile: bool) -> Persistence | None:
    """Start-up check of an external store: raise :class:`SystemExit` with
    :func:`volatile_message` if AOF is off, unless ``allow_volatile``.

    When CONFIG is unavailable (managed Redis), AOF off only warns: the operator may persist
    by other means (replicas, snapshots) the server cannot see. An unreachable store only warns
    too (readiness reports it); returns the settings found, or None if unreachable.
    """
    client = redis.Redis.from_url(
        _node_url(url), decode_responses=True, socket_timeout=10, socket_connect_timeout=10
    )
    try:
        found = probe(client)
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        log.warning("could not check the store's persistence (%s); serving anyway", exc)
        return None
    finally:
        client.close()
    if found.aof:
        log.info("store persistence: AOF on, appendfsync %s", found.fsync or "unknown")
    elif found.source == "info":
        log.warning(
            "the store does not allow CONFIG and INFO persistence reports AOF %s: if it is not "
            "persisted by other means, a restart loses budgets and spend",
            "off" if found.aof is False else "unknown",
        )
    elif allow_volatile:
        log.warning("serving on a store with AOF off (--allow-volatile-store): a restart loses it")
    else:
        raise SystemExit(volatile_message(url))
    return found
