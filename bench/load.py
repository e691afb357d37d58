"""Closed-loop load: ``concurrency`` clients, each sending its next operation as soon as the
previous one answered, for a bounded time and a bounded number of operations."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# One operation: returns how many HTTP requests (or Redis calls) it made, or raises.
Op = Callable[[int], Awaitable[int]]


@dataclass
class CellResult:
    """What one load cell measured (latencies in seconds, per operation)."""

    ops: int = 0
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def run_cell(
    op: Op,
    concurrency: int,
    seconds: float,
    max_ops: int,
    warmup_s: float = 0.5,
    on_start: Callable[[], None] | None = None,
) -> CellResult:
    """Run ``op`` from ``concurrency`` tasks: a warm-up (not measured, it also opens every
    connection) then a measured window that ends at ``seconds`` or ``max_ops``."""
    counter = 0
    result = CellResult()
    measuring = False
    stop_at = 0.0

    async def client() -> None:
        nonlocal counter
        while True:
            now = time.perf_counter()
            if now >= stop_at or (measuring and result.ops >= max_ops):
                return
            i = counter
            counter += 1
            try:
                n = await op(i)
            except Exception as exc:
                if measuring:
                    result.errors += 1
                    result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                continue
            if measuring:
                result.latencies.append(time.perf_counter() - now)
                result.ops += 1
                result.requests += n

    if warmup_s > 0:
        stop_at = time.perf_counter() + warmup_s
        await asyncio.gather(*(client() for _ in range(concurrency)))
    if on_start is not None:
        on_start()
    measuring = True
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result
