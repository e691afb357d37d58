"""Liveness vs readiness while the store is away: readiness fails at once, liveness only once
the store has been unreachable for longer than the grace, and both recover with the store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from runcycles_server_lite.embedded import EmbeddedRedis
from runcycles_server_lite.testing import running_server


def test_liveness_fails_only_after_the_store_grace(tmp_path: Path) -> None:
    store = EmbeddedRedis(tmp_path / "store", own_group=True).start()
    try:
        with running_server(
            tmp_path / "srv", redis_url=store.url, liveness_store_grace_s=1.0
        ) as srv:
            live, ready = f"{srv.base_url}/actuator/health/liveness", f"{srv.base_url}/readyz"
            assert httpx.get(live, timeout=5).json() == {"status": "UP"}
            store.stop()
            assert httpx.get(ready, timeout=5).status_code == 503
            first = httpx.get(live, timeout=5)
            assert first.status_code == 200 and first.json()["status"] == "UP"
            assert "store_unreachable_s" in first.json()
            time.sleep(1.2)
            down = httpx.get(live, timeout=5)
            assert down.status_code == 503, down.text
            assert down.json()["status"] == "DOWN" and down.json()["store_unreachable_s"] >= 1.0
            store.start()
            deadline = time.monotonic() + 30
            while httpx.get(live, timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "liveness did not recover with the store"
                time.sleep(0.1)
            assert httpx.get(live, timeout=5).json() == {"status": "UP"}
            assert httpx.get(ready, timeout=5).status_code == 200
    finally:
        store.stop()
