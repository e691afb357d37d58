"""Redis memory per reservation (active, then finalized) and how long finalized records stay."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from runcycles_server_lite.config import Settings
from runcycles_server_lite.store import Store

from . import workload as wl
from .procs import Served

# The goal (issue: hot path) and what the layout before compact finalized records measured
# (10,000 reservations, 3-level subject, 2 budgets, default redis config, used_memory delta).
GOAL_BYTES_PER_FINALIZED = 1536
OLD_LAYOUT_BYTES_PER_FINALIZED = 8046


@dataclass
class MemoryReport:
    redis_config: str
    reservations: int
    bytes_per_active: float  # INFO used_memory delta / N after N reserves
    bytes_per_finalized: float  # the same after committing them all
    keys_per_active: float  # MEMORY USAGE of every key the N reserves created, / N
    keys_per_finalized: float  # the same after committing them all
    # MEMORY USAGE after committing, / N, by what the bytes belong to.
    finalized_record: float  # fin:<id>
    reserve_idempotency: float  # idem:reserve:<key>
    commit_idempotency: float  # idem:commit:<key>
    indexes: float  # res:idx and res:exp
    retention_setting_ms: int
    idempotency_setting_ms: int
    reservation_pttl_ms: int  # measured on a committed reservation
    idempotency_pttl_ms: int  # measured on its reserve idempotency record


async def _used_memory(store: Store) -> int:
    # A background AOF rewrite or save holds buffers that used_memory counts: wait it out.
    for _ in range(100):
        p: dict[str, Any] = await store.redis.info("persistence")
        if not int(p.get("aof_rewrite_in_progress", 0)) and not int(
            p.get("rdb_bgsave_in_progress", 0)
        ):
            break
        await asyncio.sleep(0.1)
    info: dict[str, Any] = await store.redis.info("memory")
    return int(info["used_memory"])


async def _keys_bytes(store: Store, keys: list[str]) -> int:
    """Exact MEMORY USAGE (every element counted) summed over ``keys``."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes: list[int | None] = await pipe.execute()
    return sum(s or 0 for s in sizes)


async def _measure(served: Served, n: int, listpack_value: int | None) -> MemoryReport:
    tenant = f"memory-{listpack_value or 'default'}"
    store = Store.from_url(served.redis_url)
    config = "default"
    try:
        if listpack_value is not None:
            # What-if: let reservation hashes stay compact listpacks (Redis's default turns a
            # hash into a hashtable once any value exceeds 64 bytes).
            await store.redis.config_set("hash-max-ziplist-value", listpack_value)
            config = f"hash-max-ziplist-value {listpack_value}"
        api_key = await wl.provision(store, tenant)
        headers = {"x-cycles-api-key": api_key, "content-type": "application/json"}
        async with httpx.AsyncClient(base_url=served.base_url, headers=headers) as http:
            base = await _used_memory(store)
            rids: list[str] = []
            idems: list[str] = []
            commit_idems: list[str] = []
            for i in range(n):
                body = wl.reserve_body(tenant, i)
                r = await http.post("/v1/reservations", content=orjson.dumps(body))
                rids.append(r.raise_for_status().json()["reservation_id"])
                idems.append(body["idempotency_key"])
            active = await _used_memory(store)
            k = store.keys
            # A fresh tenant: its two index ZSETs hold only these reservations, so count whole.
            indexes = [k.reservation_index(tenant), k.reservation_expiry(tenant)]
            # Every key a reservation has at some point: the ACTIVE hash, the finalized record,
            # the reserve idempotency record and (once committed) the commit's.
            per_res = (
                [k.reservation(tenant, r) for r in rids]
                + [k.finalized(tenant, r) for r in rids]
                + [k.idempotency(tenant, "reserve", i) for i in idems]
            )
            keys_active = await _keys_bytes(store, per_res + indexes)
            for rid in rids:
                body = wl.commit_body()
                c = await http.post(f"/v1/reservations/{rid}/commit", content=body)
                c.raise_for_status()
                commit_idems.append(orjson.loads(body)["idempotency_key"])
            finalized = await _used_memory(store)
            per_res += [k.idempotency(tenant, "commit", i) for i in commit_idems]
            keys_finalized = await _keys_bytes(store, per_res + indexes)
            parts = [
                await _keys_bytes(store, [k.finalized(tenant, r) for r in rids]) / n,
                await _keys_bytes(store, [k.idempotency(tenant, "reserve", i) for i in idems]) / n,
                await _keys_bytes(store, [k.idempotency(tenant, "commit", i) for i in commit_idems])
                / n,
                await _keys_bytes(store, indexes) / n,
            ]
            res_pttl = int(await store.redis.pttl(k.finalized(tenant, rids[0])))
            idem_pttl = int(await store.redis.pttl(k.idempotency(tenant, "reserve", idems[0])))
    finally:
        if listpack_value is not None:
            await store.redis.config_set("hash-max-ziplist-value", 64)
        await store.close()
    return MemoryReport(
        redis_config=config,
        reservations=n,
        bytes_per_active=(active - base) / n,
        bytes_per_finalized=(finalized - base) / n,
        keys_per_active=keys_active / n,
        keys_per_finalized=keys_finalized / n,
        finalized_record=parts[0],
        reserve_idempotency=parts[1],
        commit_idempotency=parts[2],
        indexes=parts[3],
        retention_setting_ms=Settings().finalized_retention_ms,
        idempotency_setting_ms=Settings().idempotency_ms,
        reservation_pttl_ms=res_pttl,
        idempotency_pttl_ms=idem_pttl,
    )


def measure(served: Served, n: int) -> list[MemoryReport]:
    """The embedded store as configured, then with ``hash-max-ziplist-value 1024``."""
    return [asyncio.run(_measure(served, n, None)), asyncio.run(_measure(served, n, 1024))]
