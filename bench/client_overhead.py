"""Client side: what the ``@cycles`` decorator adds to one call (reserve + commit) over the
bare call, over the same two requests sent with plain httpx, and next to the official
``runcycles`` SDK's decorator against the same server."""

from __future__ import annotations

import contextlib
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


def _interleaved(
    fns: list[tuple[str, Callable[[], Any]]], calls: int, warmup: int
) -> list[Variant]:
    """Time each function ``calls`` times, round-robin one call each, so that whatever else
    the machine is doing slows every variant alike."""
    for _, fn in fns:
        for _ in range(warmup):
            fn()
    out = [Variant(name) for name, _ in fns]
    cpu = [0.0] * len(fns)
    for _ in range(calls):
        for i, (_, fn) in enumerate(fns):
            c, t = time.process_time(), time.perf_counter()
            fn()
            out[i].latencies.append(time.perf_counter() - t)
            cpu[i] += time.process_time() - c
    for v, used in zip(out, cpu, strict=True):
        v.cpu_per_call_s = used / calls
    return out


def _work() -> int:
    # The guarded "call": a constant, so every microsecond measured is the guard's.
    return 42


def measure(served: Served, calls: int, warmup: int = 30) -> tuple[list[Variant], str]:
    """Every variant, one call at a time, interleaved; returns them and the tenant."""
    tenant = "client-overhead"
    api_key = wl.provision_sync(served.redis_url, tenant)
    journals = tempfile.mkdtemp(prefix="rcbench-journal-")
    # The journal fsyncs each commit record (file and directory): by default while the commit
    # is in flight, with journal_sync="before_send" before it leaves; on tmpfs those fsyncs are
    # free, which isolates their cost from the rest.
    shm = Path("/dev/shm")
    fast = tempfile.mkdtemp(prefix="rcbench-journal-", dir=shm if shm.is_dir() else None)
    guard: dict[str, Any] = {
        "estimate": wl.ESTIMATE,
        "actual": wl.ACTUAL,
        "action_kind": "llm.completion",
        "action_name": "openai:gpt-4o",
        "workspace": "bench",
    }
    fns: list[tuple[str, Callable[[], Any]]] = [("bare call", _work)]
    try:
        with contextlib.ExitStack() as stack:
            headers = {"x-cycles-api-key": api_key, "content-type": "application/json"}
            http = stack.enter_context(
                httpx.Client(base_url=served.base_url, headers=headers, timeout=10)
            )
            counter = iter(range(10**9))

            def raw() -> int:
                r = http.post(
                    "/v1/reservations",
                    content=orjson.dumps(wl.reserve_body(tenant, next(counter))),
                )
                rid = r.raise_for_status().json()["reservation_id"]
                http.post(f"/v1/reservations/{rid}/commit", content=wl.commit_body())
                return _work()

            fns.append(("plain httpx reserve+commit", raw))
            for name, journal_dir, heartbeat, sync in (
                ("runcycles-core @cycles", f"{journals}/core", True, "overlap"),
                (
                    "runcycles-core @cycles, journal_sync=before_send",
                    f"{journals}/strict",
                    True,
                    "before_send",
                ),
                ("runcycles-core @cycles, journal on tmpfs", fast, True, "overlap"),
                ("runcycles-core @cycles, tmpfs, heartbeat=False", fast, False, "overlap"),
            ):
                config = runcycles_core.CyclesConfig(
                    base_url=served.base_url,
                    api_key=api_key,
                    tenant=tenant,
                    journal_dir=journal_dir,
                    journal_sync=sync,
                )
                core_client = stack.enter_context(runcycles_core.CyclesClient(config))
                fns.append(
                    (name, core_cycles(client=core_client, heartbeat=heartbeat, **guard)(_work))
                )
            official_config = runcycles.CyclesConfig(
                base_url=served.base_url,
                api_key=api_key,
                tenant=tenant,
                journal_dir=f"{journals}/official",
            )
            official = stack.enter_context(runcycles.CyclesClient(official_config))
            fns.append(
                (
                    "official runcycles 0.5 @cycles",
                    runcycles.cycles(client=official, **guard)(_work),
                )
            )
            return _interleaved(fns, calls, warmup), tenant
    finally:
        shutil.rmtree(journals, ignore_errors=True)
        shutil.rmtree(fast, ignore_errors=True)
