"""Client side: what the ``@cycles`` decorator adds to one call (reserve + commit) over the
bare call, over the same two requests sent with plain httpx, and next to the official
``runcycles`` SDK's decorator against the same server."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import runcycles

import runcycles_core
from runcycles_core.decorator import cycles as core_cycles

from . import workload as wl
from .load import percentile
from .procs import Served


@dataclass
class Variant:
    """Per-call wall latencies (seconds) and client CPU per call of one way to call."""

    name: str
    latencies: list[float] = field(default_factory=list)
    cpu_per_call_s: float = 0.0

    def pct_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def _time(name: str, fn: Callable[[], Any], calls: int, warmup: int) -> Variant:
    for _ in range(warmup):
        fn()
    v = Variant(name)
    cpu0 = time.process_time()
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        v.latencies.append(time.perf_counter() - t)
    v.cpu_per_call_s = (time.process_time() - cpu0) / calls
    return v


def _work() -> int:
    # The guarded "call": a constant, so every microsecond measured is the guard's.
    return 42


def measure(served: Served, calls: int, warmup: int = 30) -> tuple[list[Variant], str]:
    """Every variant, sequentially, one client at a time; returns them and the tenant."""
    tenant = "client-overhead"
    api_key = wl.provision_sync(served.redis_url, tenant)
    journals = tempfile.mkdtemp(prefix="rcbench-journal-")
    out = [_time("bare call", _work, calls * 10, warmup)]
    try:
        headers = {"x-cycles-api-key": api_key, "content-type": "application/json"}
        with httpx.Client(base_url=served.base_url, headers=headers, timeout=10) as http:
            counter = iter(range(10**9))

            def raw() -> int:
                r = http.post(
                    "/v1/reservations",
                    content=orjson.dumps(wl.reserve_body(tenant, next(counter))),
                )
                rid = r.raise_for_status().json()["reservation_id"]
                http.post(f"/v1/reservations/{rid}/commit", content=wl.commit_body())
                return _work()

            out.append(_time("plain httpx reserve+commit", raw, calls, warmup))

        guard: dict[str, Any] = {
            "estimate": wl.ESTIMATE,
            "actual": wl.ACTUAL,
            "action_kind": "llm.completion",
            "action_name": "openai:gpt-4o",
            "workspace": "bench",
        }
        # The journal fsyncs each commit record (file and directory) before and after the
        # commit; on tmpfs those fsyncs are free, which isolates their cost from the rest.
        shm = Path("/dev/shm")
        fast = tempfile.mkdtemp(prefix="rcbench-journal-", dir=shm if shm.is_dir() else None)
        try:
            for name, journal_dir, heartbeat in (
                ("runcycles-core @cycles", f"{journals}/core", True),
                ("runcycles-core @cycles, journal on tmpfs", fast, True),
                ("runcycles-core @cycles, tmpfs, heartbeat=False", fast, False),
            ):
                config = runcycles_core.CyclesConfig(
                    base_url=served.base_url,
                    api_key=api_key,
                    tenant=tenant,
                    journal_dir=journal_dir,
                )
                with runcycles_core.CyclesClient(config) as core_client:
                    ours = core_cycles(client=core_client, heartbeat=heartbeat, **guard)(_work)
                    out.append(_time(name, ours, calls, warmup))
        finally:
            shutil.rmtree(fast, ignore_errors=True)

        official_config = runcycles.CyclesConfig(
            base_url=served.base_url,
            api_key=api_key,
            tenant=tenant,
            journal_dir=f"{journals}/official",
        )
        with runcycles.CyclesClient(official_config) as official_client:
            theirs = runcycles.cycles(client=official_client, **guard)(_work)
            out.append(_time("official runcycles 0.5 @cycles", theirs, calls, warmup))
    finally:
        shutil.rmtree(journals, ignore_errors=True)
    return out, tenant
