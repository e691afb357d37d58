"""The background loop under the sweeper and the webhook dispatcher always stops."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from runcycles_server_lite._periodic import Periodic


async def test_runs_every_interval_until_stopped() -> None:
    passes = 0

    async def job() -> None:
        nonlocal passes
        passes += 1

    loop = Periodic("t", 0.01, job)
    loop.start()
    await asyncio.sleep(0.2)
    await loop.stop()
    seen = passes
    assert seen >= 3
    await asyncio.sleep(0.05)
    assert passes == seen, "a stopped loop ran again"
    assert not loop.running


async def test_stops_when_a_pass_swallows_its_cancellation() -> None:
    """What redis-py 8.1 does to about one cancel in ten landing mid-command."""
    started = asyncio.Event()
    passes = 0

    async def swallowing_job() -> None:
        nonlocal passes
        passes += 1
        started.set()
        with contextlib.suppress(asyncio.CancelledError):  # dropped, as the library does
            await asyncio.sleep(10)

    loop = Periodic("t", 0.01, swallowing_job, stop_grace_s=5)
    loop.start()
    await started.wait()
    await asyncio.wait_for(loop.stop(), timeout=2)
    assert passes == 1


async def test_a_pass_that_never_ends_cannot_block_stop(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def stuck_job() -> None:
        started.set()
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    loop = Periodic("stuck-loop", 0.01, stuck_job, stop_grace_s=0.2)
    loop.start()
    await started.wait()
    await asyncio.wait_for(loop.stop(), timeout=2)
    assert "stuck-loop did not stop" in caplog.text
    release.set()


async def test_a_failing_pass_does_not_end_the_loop() -> None:
    passes = 0

    async def failing_job() -> None:
        nonlocal passes
        passes += 1
        raise RuntimeError("boom")

    loop = Periodic("t", 0.01, failing_job)
    loop.start()
    await asyncio.sleep(0.15)
    await loop.stop()
    assert passes >= 2


async def test_non_positive_interval_never_starts() -> None:
    loop = Periodic("t", 0, lambda: asyncio.sleep(0))
    loop.start()
    assert not loop.running
    await loop.stop()
