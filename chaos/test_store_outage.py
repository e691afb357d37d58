"""An external redis-server (AOF on) behind an in-process TCP proxy that drops or stalls
every connection for a while, under load: during the outage 503s are allowed, nothing else,
and afterwards every acked op is in the ledger exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from _harness import ExternalRedis, Server, Tally, poll
from _proxy import DROP, STALL, FaultProxy
from conftest import Counts
from test_kills import under_load

from runcycles_server_lite.testing import http_ok


def test_store_connections_dropped_then_stalled(
    tmp_path: Path, counts: Counts, tally_for: Callable[[str], Tally]
) -> None:
    redis = ExternalRedis(tmp_path).start()
    proxy = FaultProxy(redis.port).start()
    srv = Server(tmp_path, redis_url=f"redis://127.0.0.1:{proxy.port}")
    srv.redis_url = redis.url  # the checks read Redis directly, not through the fault
    try:
        srv.start()
        health = http_ok(f"{srv.url}/actuator/health")
        for mode in (DROP, STALL):  # one server for both: a start costs seconds of CI time
            tally = tally_for(f"store connections {mode} (proxy)")

            def outage(mode: str = mode, tally: Tally = tally) -> None:
                seen = tally.retries
                with proxy.fault(mode):
                    # Hold the fault until clients have felt it (a 503 or a timed-out request).
                    poll(lambda: tally.retries > seen, f"clients noticed the {mode}", timeout=30)
                poll(health, "the server reached its store again")

            under_load(srv, tally, counts, outage, f"proxy-{mode}")
    finally:
        srv.stop()
        proxy.stop()
        redis.stop()
