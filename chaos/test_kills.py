"""kill -9 under load: the embedded redis-server (the server's supervisor restarts it on the
same data dir), then the server's main process (restarted by us on the same port and data dir:
it must come back at once, nothing it started left holding the port, the AOF replayed)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from _harness import Load, Outage, Server, Tally, load_in_background, new_tenant, poll, verify
from conftest import Counts

from runcycles_server_lite.testing import http_ok, start_timeout


def under_load(
    srv: Server, tally: Tally, counts: Counts, inject: Callable[[], None], name: str
) -> None:
    """Start the load, inject the fault once some ops are acked, wait for the load to finish
    (every op retried to a definite answer), then check the ledger."""
    tenant, key = new_tenant(srv.redis_url, name)
    outage = Outage(settle=counts.clients)
    load = Load(srv.url, key, tenant, tally, outage)
    thread, errors = load_in_background(load, counts.clients, counts.ops)
    try:
        poll(lambda: tally.acked >= counts.clients or not thread.is_alive(), "load under way")
        outage.begin()
        inject()
        tally.count += 1
        outage.clear()
    finally:
        thread.join(start_timeout(120))
    assert not thread.is_alive(), "load did not finish"
    assert not errors, errors
    verify(srv.url, srv.redis_url, load, tally)
    assert tally.zeros_ok(), f"{tally}\n{srv.tail()}"


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_kill9_store_then_server(
    tmp_path: Path, counts: Counts, tally_for: Callable[[str], Tally], workers: int
) -> None:
    srv = Server(tmp_path, workers=workers)
    try:
        srv.start()
        health = http_ok(f"{srv.url}/actuator/health")

        def kill_store() -> None:
            (store,) = srv.members("redis-server")
            os.kill(store, signal.SIGKILL)
            poll(
                lambda: [p for p in srv.members("redis-server") if p != store] and health(),
                "the supervisor restarted the embedded store",
            )

        if workers == 1 or counts.large:
            # The supervisor is the main process's, whatever the worker count: by default
            # (CI time) the store is killed under the one-worker server only.
            tally = tally_for(f"kill -9 embedded redis-server, {workers}w")
            under_load(srv, tally, counts, kill_store, "kill-store")

        def kill_server() -> None:
            srv.kill9()  # waits until no worker or store of it is left
            took = srv.start()  # same port, same data dir; fails if the port is still held
            tally.notes.append(f"restart took {took:.1f} s")

        tally = tally_for(f"kill -9 server main + restart, {workers}w")
        under_load(srv, tally, counts, kill_server, "kill-server")
    finally:
        srv.stop()
