"""Redis's own time per reserve and per commit (INFO commandstats usec_per_call) as the
subject grows from 1 to 6 scopes, every scope budgeted: what one more budgeted level costs
the store. Serial calls through the server's call builder (runcycles_server_lite.ledger)."""

from __future__ import annotations

from dataclasses import dataclass

from runcycles_server_lite import events
from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.keys import SUBJECT_LEVELS
from runcycles_server_lite.ledger import Commit, Reserve, commit, reserve
from runcycles_server_lite.store import Store

from . import workload as wl

CALLS = 400
WARMUP = 50
DAY_MS = 24 * 3600 * 1000


@dataclass
class ScopeCost:
    scopes: int
    reserve_us: float
    commit_us: float


def _scopes(tenant: str, n: int) -> list[str]:
    out, path = [], ""
    for level in SUBJECT_LEVELS[:n]:
        seg = f"{level}:{tenant if level == 'tenant' else 'bench'}"
        path = f"{path}/{seg}" if path else seg
        out.append(path)
    return out


async def _usec(store: Store) -> float:
    stats = await store.redis.info("commandstats")
    row = stats.get("cmdstat_evalsha")
    return float(row["usec_per_call"]) if row else 0.0


async def measure(redis_url: str, calls: int = CALLS) -> list[ScopeCost]:
    store = Store.from_url(redis_url)
    out: list[ScopeCost] = []
    try:
        for n in range(1, len(SUBJECT_LEVELS) + 1):
            tenant = f"scopes-{n}"
            await prov.create_tenant(store, tenant, tenant)
            scopes = _scopes(tenant, n)
            for s in scopes:
                await prov.create_budget(store, tenant, s, wl.UNIT, wl.ALLOCATED)
            ctx = events.context(tenant)

            async def one(
                i: int, tenant: str = tenant, scopes: list[str] = scopes, ctx: str = ctx
            ) -> str:
                rid = f"res_{tenant}_{i:032x}"
                reply = await reserve(
                    store,
                    Reserve(
                        tenant=tenant,
                        reservation_id=rid,
                        idempotency_key=f"r{i}",
                        payload_hash="v1:bench",
                        amount=wl.ESTIMATE,
                        unit=wl.UNIT,
                        scopes=scopes,
                        subject_json="{}",
                        action_json='{"kind":"llm.completion","name":"x"}',
                        metadata_json="",
                        event_context=ctx,
                        idempotency_ms=DAY_MS,
                        ttl_ms=wl.TTL_MS,
                    ),
                )
                if reply[0] != "OK":
                    raise RuntimeError(f"reserve.lua: {reply}")
                return rid

            async def settle(i: int, rid: str, tenant: str = tenant, ctx: str = ctx) -> None:
                reply = await commit(
                    store,
                    Commit(
                        tenant=tenant,
                        caller_tenant=tenant,
                        reservation_id=rid,
                        idempotency_key=f"c{i}",
                        payload_hash="v1:bench",
                        amount=wl.ACTUAL,
                        unit=wl.UNIT,
                        metrics_json="",
                        metadata_json="",
                        event_context=ctx,
                        retention_ms=DAY_MS,
                        idempotency_ms=DAY_MS,
                    ),
                )
                if reply[0] != "OK":
                    raise RuntimeError(f"commit.lua: {reply}")

            warm = [await one(i) for i in range(WARMUP)]
            for i, rid in enumerate(warm):
                await settle(i, rid)
            await store.redis.config_resetstat()
            rids = [await one(i) for i in range(WARMUP, WARMUP + calls)]
            r_us = await _usec(store)
            await store.redis.config_resetstat()
            for i, rid in enumerate(rids, start=WARMUP):
                await settle(i, rid)
            out.append(ScopeCost(n, r_us, await _usec(store)))
            check = await wl.check_ledger(store, tenant)
            if check.identity_mismatches:
                raise RuntimeError(f"ledger identity broken for {tenant}")
    finally:
        await store.close()
    return out
