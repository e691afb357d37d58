"""Keep the embedded store running: restart redis-server on the same data dir if it dies.

The server's workers reconnect on their own (each request gets a 503 while the store is away,
then succeeds again). The restart replays the AOF, so nothing acknowledged is lost beyond the
fsync policy's window. If the store cannot be brought back, the liveness endpoint fails after
``liveness_store_grace_s`` and an orchestrator restarts the whole server.
"""

from __future__ import annotations

import logging
import threading

from .embedded import EmbeddedRedis

__all__ = ["StoreSupervisor"]

log = logging.getLogger("runcycles_server_lite.store")


class StoreSupervisor:
    """A daemon thread that checks the embedded store every ``interval`` seconds and restarts
    it when it has exited, backing off up to ``max_backoff`` seconds between failed attempts."""

    def __init__(
        self, embedded: EmbeddedRedis, *, interval: float = 0.5, max_backoff: float = 10.0
    ) -> None:
        self.embedded = embedded
        self.interval = interval
        self.max_backoff = max_backoff
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="runcycles-store-supervisor", daemon=True
        )

    def start(self) -> StoreSupervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (before the store is stopped on purpose)."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        if not self.embedded.owns_process:
            return  # a store left running by an earlier run: not our child to watch
        delay = self.interval
        while not self._stop.wait(delay):
            code = self.embedded.exit_code()
            # A failed restart leaves no process: that is down too.
            if code is None and self.embedded.owns_process:
                delay = self.interval
                continue
            log.error(
                "embedded store exited (status %s); restarting it on %s",
                code,
                self.embedded.data_dir,
            )
            try:
                self.embedded.start()
            except Exception as exc:  # keep trying: liveness reports a store that stays down
                delay = min(max(delay * 2, 1.0), self.max_backoff)
                log.error("restarting the embedded store failed (retry in %.0f s): %s", delay, exc)
                continue
            self.restarts += 1
            delay = self.interval
            log.warning("embedded store restarted (%d restart(s) so far)", self.restarts)
