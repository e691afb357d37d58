"""The expiry sweeper: ACTIVE reservations past expires_at + grace go EXPIRED, holds return.

Every ``sweep_interval_s`` one process (whoever takes the Redis lease) walks the tenant index;
per tenant it reads the due ids from ``res:exp`` (scored by expires_at + grace, compared with
Redis TIME) and runs ``expire.lua`` once for up to ``sweep_batch`` of them. The script
re-checks everything itself, so a lost lease or two overlapping sweepers only waste work:
expiry is idempotent and a hold is returned at most once.

Once a minute it also trims the event streams and drops, from each tenant's created_at index,
the ids whose record has outlived its retention (Redis expired the record itself; without
this the index would keep ~100 bytes per reservation for ever).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from . import events
from ._periodic import Periodic
from .config import Settings
from .metrics import SETTLEMENTS
from .store import Store

log = logging.getLogger("runcycles_server_lite.sweeper")

_TENANT_CHUNK = 100
_MAX_BATCHES_PER_TENANT = 20
_TRIM_EVERY_MS = 60_000


@dataclass
class SweepStats:
    """What one sweep did (summed over tenants)."""

    expired: int = 0
    skipped: int = 0
    quarantined: int = 0
    missing: int = 0
    ran: bool = True


class Sweeper:
    """Runs :meth:`sweep` periodically in a background task."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._lease_key = store.keys.lease("sweeper")
        self._last_trim_ms = 0
        self._periodic = Periodic("runcycles-expiry-sweeper", settings.sweep_interval_s, self._pass)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _pass(self) -> None:
        stats = await self.sweep()
        if stats.quarantined:
            log.warning("sweeper quarantined %d reservations", stats.quarantined)

    async def sweep(self) -> SweepStats:
        """One pass over every tenant, under the lease; ``ran=False`` if another process
        holds it."""
        token = secrets.token_hex(16)
        lease_ms = max(5000, int(self.settings.sweep_interval_s * 10_000))
        if not await self.store.redis.set(self._lease_key, token, nx=True, px=lease_ms):
            return SweepStats(ran=False)
        try:
            return await self._sweep_all()
        finally:
            await self.store.run("unlock", [self._lease_key], [token])

    async def _trim_events(self, tenants: list[str], now: int) -> None:
        """Event-stream retention: entries older than ``event_retention_ms`` go (entry ids are
        Redis-TIME milliseconds, so XTRIM MINID trims by age)."""
        minid = max(0, now - self.settings.event_retention_ms)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for t in tenants:
                pipe.xtrim(self.store.keys.events(t), minid=minid, approximate=True)
            await pipe.execute()

    async def _prune_index(self, tenant: str, now: int) -> int:
        """Drop index ids created more than ``finalized_retention_ms`` ago whose record (ACTIVE
        hash or finalized string) is gone; at most a bounded number per call."""
        store, keys = self.store, self.store.keys
        index = keys.reservation_index(tenant)
        cutoff = now - self.settings.finalized_retention_ms
        batch = max(1, self.settings.sweep_batch)
        offset = dropped = 0
        for _ in range(_MAX_BATCHES_PER_TENANT):
            ids: list[str] = await store.redis.zrangebyscore(
                index, "-inf", cutoff, start=offset, num=batch
            )
            if not ids:
                break
            async with store.redis.pipeline(transaction=False) as pipe:
                for rid in ids:
                    pipe.exists(keys.reservation(tenant, rid), keys.finalized(tenant, rid))
                alive: list[int] = await pipe.execute()
            gone = [rid for rid, n in zip(ids, alive, strict=True) if not n]
            if gone:
                await store.redis.zrem(index, *gone)
            dropped += len(gone)
            offset += len(ids) - len(gone)  # live ids stay in the range: step over them
            if len(ids) < batch:
                break
        return dropped

    async def _sweep_all(self) -> SweepStats:
        stats = SweepStats()
        store = self.store
        keys = store.keys
        now = await store.time_ms()
        trim = now - self._last_trim_ms >= _TRIM_EVERY_MS
        if trim:
            self._last_trim_ms = now
            await self._trim_events([events.SYSTEM_TENANT], now)
        batch = max(1, self.settings.sweep_batch)
        start = 0
        while True:
            tenants: list[str] = await store.redis.zrange(
                keys.tenants(), start, start + _TENANT_CHUNK - 1
            )
            if not tenants:
                return stats
            start += len(tenants)
            if trim:
                await self._trim_events(tenants, now)
                for t in tenants:
                    await self._prune_index(t, now)
            async with store.redis.pipeline(transaction=False) as pipe:
                for t in tenants:
                    pipe.zrangebyscore(keys.reservation_expiry(t), "-inf", now, start=0, num=batch)
                due_lists: list[list[str]] = await pipe.execute()
            for tenant, due in zip(tenants, due_lists, strict=True):
                # A full batch may mean a backlog (after downtime): keep going, a bounded
                # number of batches per tick so one tenant cannot starve the others.
                for _ in range(_MAX_BATCHES_PER_TENANT):
                    if not due or not await self._expire(tenant, due, stats):
                        break
                    if len(due) < batch:
                        break
                    due = await store.redis.zrangebyscore(
                        keys.reservation_expiry(tenant), "-inf", now, start=0, num=batch
                    )

    async def _expire(self, tenant: str, ids: list[str], stats: SweepStats) -> bool:
        keys = self.store.keys
        try:
            result = await self.store.run(
                "expire",
                [keys.tenant(tenant), keys.reservation_expiry(tenant)]
                + [keys.reservation(tenant, rid) for rid in ids]
                + [keys.events(tenant)],
                [
                    str(self.settings.finalized_retention_ms),
                    str(self.settings.idempotency_ms),
                    *ids,
                    events.context(tenant, source=events.SOURCE_SWEEPER, actor=events.SYSTEM_ACTOR),
                ],
            )
        except Exception as exc:  # one tenant's failure must not stop the others
            log.warning("expiring reservations of tenant %s failed: %s", tenant, exc)
            return False
        expired, skipped, quarantined, missing = (int(x) for x in result)
        stats.expired += expired
        if expired:
            SETTLEMENTS.labels("expired").inc(expired)
        stats.skipped += skipped
        stats.quarantined += quarantined
        stats.missing += missing
        return True
