"""Server throughput and latency: reserve-only and reserve+commit against server-lite, the
same load against a Starlette hello-world, and raw EVALSHA loops on the same Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from runcycles_server_lite import events
from runcycles_server_lite.keys import Keys
from runcycles_server_lite.ledger import Reserve
from runcycles_server_lite.ledger import reserve as run_reserve
from runcycles_server_lite.store import Store

from . import workload as wl
from .clients import LoadClient, make_client
from .load import CellResult, Op, run_cell
from .procs import CpuSnapshot, Served

RESERVE = "reserve"
LIFECYCLE = "reserve+commit"
HELLO = "hello-world POST"
EVAL_TRIVIAL = "EVALSHA return 1"
EVAL_RESERVE = "EVALSHA reserve.lua"


@dataclass
class CellSpec:
    seconds: float
    max_ops: int
    warmup_s: float


@dataclass
class Row:
    """One measured cell."""

    target: str
    workers: int | None  # None: no HTTP server in the path
    clients: int
    result: CellResult
    cpu_pct: dict[str, float]  # percent of one core, per role
    peak_rss: dict[str, int] = field(default_factory=dict)
    ledger: wl.LedgerCheck | None = None
    # Redis's own time per EVALSHA (INFO commandstats), warm-up included: script cost as
    # Redis measures it, whatever the scheduling around it.
    evalsha_us: float | None = None


async def _reset_stats(store: Store) -> None:
    await store.redis.config_resetstat()


async def _evalsha_us(store: Store) -> float | None:
    stats: dict[str, Any] = await store.redis.info("commandstats")
    row = stats.get("cmdstat_evalsha")
    return float(row["usec_per_call"]) if row else None


@contextlib.asynccontextmanager
async def _rss_sampler(served: Served, peak: dict[str, int]) -> AsyncIterator[None]:
    async def sample() -> None:
        while True:
            for role, value in served.rss().items():
                peak[role] = max(peak.get(role, 0), value)
            await asyncio.sleep(0.5)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _measure(
    served: Served, op: Op, clients: int, spec: CellSpec
) -> tuple[CellResult, dict[str, float], dict[str, int]]:
    marks: list[CpuSnapshot] = []
    peak: dict[str, int] = {}
    async with _rss_sampler(served, peak):
        result = await run_cell(
            op,
            clients,
            spec.seconds,
            spec.max_ops,
            spec.warmup_s,
            on_start=lambda: marks.append(served.cpu()),
        )
    marks.append(served.cpu())
    return result, marks[1].pct_since(marks[0]), peak


class _Counts:
    reserved = 0
    committed = 0


def _http_client(kind: str, served: Served, clients: int, api_key: str = "") -> LoadClient:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["x-cycles-api-key"] = api_key
    return make_client(kind, served.base_url, clients, headers)


async def http_cell(
    served: Served,
    ledger_of: Served | None,
    target: str,
    clients: int,
    spec: CellSpec,
    client_kind: str = "aiohttp",
    tag: str = "",
) -> Row:
    """One cell over HTTP. ``ledger_of`` is the server-lite whose Redis holds the ledger
    (None for the hello-world)."""
    counts = _Counts()
    tenant = f"w{served.workers}-{target.split()[0].replace('+', '-')}-c{clients}{tag}"
    store = Store.from_url(ledger_of.redis_url) if ledger_of is not None else None
    api_key = await wl.provision(store, tenant) if store is not None else ""
    client = _http_client(client_kind, served, clients, api_key)

    async def hello(i: int) -> int:
        status, _ = await client.post("/hello", orjson.dumps(wl.reserve_body("hello", i)))
        if status != 200:
            raise RuntimeError(f"hello {status}")
        return 1

    async def reserve(i: int) -> bytes:
        status, body = await client.post(
            "/v1/reservations", orjson.dumps(wl.reserve_body(tenant, i))
        )
        if status != 200:
            raise RuntimeError(f"reserve {status}: {body[:200]!r}")
        counts.reserved += 1
        return body

    async def reserve_only(i: int) -> int:
        await reserve(i)
        return 1

    async def lifecycle(i: int) -> int:
        rid = orjson.loads(await reserve(i))["reservation_id"]
        status, body = await client.post(f"/v1/reservations/{rid}/commit", wl.commit_body())
        if status != 200:
            raise RuntimeError(f"commit {status}: {body[:200]!r}")
        counts.committed += 1
        return 2

    op: Op = {HELLO: hello, RESERVE: reserve_only, LIFECYCLE: lifecycle}[target]
    ledger = None
    script_us = None
    try:
        if store is not None:
            await _reset_stats(store)
        result, cpu, peak = await _measure(served, op, clients, spec)
        if store is not None:
            script_us = await _evalsha_us(store)
            ledger = await wl.check_ledger(store, tenant, counts.reserved, counts.committed)
    finally:
        await client.aclose()
        if store is not None:
            await store.close()
    return Row(target, served.workers, clients, result, cpu, peak, ledger, script_us)


async def evalsha_cell(served: Served, target: str, clients: int, spec: CellSpec) -> Row:
    """Scripts called straight from redis-py asyncio (this process) on server-lite's Redis:
    the store's own ceiling, no HTTP, no app code."""
    counts = _Counts()
    client: Any = aioredis.Redis.from_url(
        served.redis_url, decode_responses=True, max_connections=clients
    )
    store = Store(client, Keys())
    tenant = f"raw-c{clients}"
    ledger = None
    try:
        if target == EVAL_TRIVIAL:
            script = client.register_script("return 1")
            key = "bench:trivial"

            async def op(i: int) -> int:
                await script(keys=[key], args=[i])
                return 1

        else:
            await wl.provision(store, tenant)
            scopes = [f"tenant:{tenant}", f"tenant:{tenant}/workspace:bench"]
            events_ctx = events.context(tenant)
            subject = orjson.dumps({"tenant": tenant, "workspace": "bench"}).decode()

            async def op(i: int) -> int:
                # The server's own call builder: the same KEYS/ARGV an HTTP reserve sends.
                r = Reserve(
                    tenant=tenant,
                    reservation_id=f"res_{tenant}_{i:032x}",
                    idempotency_key=f"raw-{i}",
                    payload_hash="v1:bench",
                    amount=wl.ESTIMATE,
                    unit=wl.UNIT,
                    scopes=scopes,
                    subject_json=subject,
                    action_json='{"kind":"llm.completion","name":"openai:gpt-4o"}',
                    metadata_json="",
                    event_context=events_ctx,
                    idempotency_ms=30 * 24 * 3600 * 1000,
                    ttl_ms=wl.TTL_MS,
                    grace_ms=5000,
                )
                reply = await run_reserve(store, r)
                if reply[0] != "OK":
                    raise RuntimeError(f"reserve.lua: {reply}")
                counts.reserved += 1
                return 1

        await _reset_stats(store)
        result, cpu, peak = await _measure(served, op, clients, spec)
        script_us = await _evalsha_us(store)
        if target == EVAL_RESERVE:
            ledger = await wl.check_ledger(store, tenant, counts.reserved, 0)
    finally:
        await client.aclose()
    return Row(target, None, clients, result, cpu, peak, ledger, script_us)
