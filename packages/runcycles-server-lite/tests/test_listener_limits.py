"""Listener hardening over real HTTP: the in-flight cap (health exempt), the connection cap and
the keep-alive timeout, on a real server with real Redis."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runcycles_server_lite._serving import InflightLimit, uvicorn_options
from runcycles_server_lite.cli import build_parser, settings_from_args
from runcycles_server_lite.config import Settings
from runcycles_server_lite.testing import ServerHandle, running_server, start_timeout


def address(srv: ServerHandle) -> tuple[str, int]:
    host, port = srv.base_url.removeprefix("http://").split(":")
    return host, int(port)


@contextlib.contextmanager
def stalled_posts(srv: ServerHandle, secret: str, n: int) -> Iterator[list[socket.socket]]:
    """``n`` reserve requests whose bodies never finish arriving: each holds a handler."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.create_connection(address(srv), timeout=10)
            socks.append(sock)
            sock.sendall(
                b"POST /v1/reservations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                + f"X-Cycles-API-Key: {secret}\r\nContent-Length: 1000\r\n\r\n{{".encode()
            )
        yield socks
    finally:
        for sock in socks:
            sock.close()


def inflight(srv: ServerHandle) -> InflightLimit:
    """The running app's in-flight limiter (to know when the stalled requests hold it)."""
    node: Any = srv._server.config.loaded_app
    while not isinstance(node, InflightLimit):
        node = getattr(node, "app", None) or node.middleware_stack
    return node


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + start_timeout(timeout)
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_inflight_cap_refuses_work_but_health_still_answers(tmp_path: Path) -> None:
    with running_server(tmp_path, max_inflight=2) as srv:
        secret = srv.provision("busy-one", {"": 1000})
        headers = {"X-Cycles-API-Key": secret}
        with httpx.Client(base_url=srv.base_url, headers=headers, timeout=10) as http:
            assert http.get("/v1/balances", params={"tenant": "busy-one"}).status_code == 200
            with stalled_posts(srv, secret, 2):
                # Both stalled requests must be inside the handler before we probe (a probe
                # in flight meanwhile would take a slot and get one of them refused).
                wait_for(lambda: inflight(srv).active == 2)
                r = http.get("/v1/balances", params={"tenant": "busy-one"})
                assert r.status_code == 503
                assert r.headers["retry-after"] == "1"
                body = r.json()
                assert body["error"] == "INTERNAL_ERROR"
                assert "busy" in body["message"]
                assert body["request_id"] == r.headers["x-request-id"]
                for path in (
                    "/actuator/health",
                    "/actuator/health/liveness",
                    "/healthz",
                    "/readyz",
                ):
                    assert http.get(path).status_code == 200, path
            # The stalled handlers end when their clients hang up; the cap frees up.
            wait_for(
                lambda: http.get("/v1/balances", params={"tenant": "busy-one"}).status_code == 200
            )


def test_connection_cap_and_keep_alive_timeout(tmp_path: Path) -> None:
    with running_server(tmp_path, max_connections=4, keep_alive_timeout_s=1) as srv:
        assert srv._server.config.limit_concurrency == 4
        assert srv._server.config.timeout_keep_alive == 1
        # An idle keep-alive connection is closed by the server after the timeout.
        with socket.create_connection(address(srv), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            sock.settimeout(start_timeout(10))
            rest = b""
            with contextlib.suppress(ConnectionError):
                while chunk := sock.recv(65536):
                    rest += chunk
            assert rest == b""  # closed, not answered
            assert 0.5 < time.monotonic() - started < start_timeout(10)
        # Past the connection cap uvicorn refuses new requests outright.
        idle = [socket.create_connection(address(srv), timeout=10) for _ in range(4)]
        try:

            def capped() -> bool:
                return httpx.get(f"{srv.base_url}/healthz", timeout=10).status_code == 503

            wait_for(capped)
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: httpx.get(f"{srv.base_url}/healthz", timeout=10).status_code == 200)


def test_listener_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    default = settings_from_args(build_parser().parse_args([]))
    assert (default.keep_alive_timeout_s, default.max_connections, default.max_inflight) == (
        5,
        1024,
        512,
    )
    args = build_parser().parse_args(
        ["--keep-alive-timeout", "7", "--max-connections", "99", "--max-inflight", "50"]
    )
    s = settings_from_args(args)
    assert (s.keep_alive_timeout_s, s.max_connections, s.max_inflight) == (7, 99, 50)
    monkeypatch.setenv("RUNCYCLES_KEEP_ALIVE_TIMEOUT_S", "9")
    monkeypatch.setenv("RUNCYCLES_MAX_CONNECTIONS", "0")
    monkeypatch.setenv("RUNCYCLES_MAX_INFLIGHT", "3")
    e = Settings.from_env()
    assert (e.keep_alive_timeout_s, e.max_connections, e.max_inflight) == (9, 0, 3)


def closed_by_server(sock: socket.socket) -> bytes:
    """Read until the server closes ``sock``; what it sent before closing."""
    sock.settimeout(start_timeout(10))
    got = b""
    with contextlib.suppress(ConnectionError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def test_header_deadline_closes_silent_and_slow_clients_only(tmp_path: Path) -> None:
    with running_server(tmp_path, header_timeout_s=0.5) as srv:
        secret = srv.provision("slow-one", {"": 1000})
        # Connects and never sends a byte.
        with socket.create_connection(address(srv), timeout=10) as sock:
            started = time.monotonic()
            assert closed_by_server(sock) == b""
            assert time.monotonic() - started >= 0.4
        # Trickles its headers slower than the deadline.
        with socket.create_connection(address(srv), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            with contextlib.suppress(ConnectionError):
                for _ in range(20):
                    time.sleep(0.1)
                    sock.sendall(b"X-Slow: 1\r\n")
            assert closed_by_server(sock) == b""
        # Idle keep-alive between requests is the keep-alive timeout's business, and a slow
        # body is not timed once the headers are in.
        with socket.create_connection(address(srv), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(1.0)
            body = (
                b'{"idempotency_key": "k-slow-1", "subject": {"tenant": "slow-one"}, '
                b'"action": {"kind": "llm.completion", "name": "m"}, '
                b'"estimate": {"unit": "USD_MICROCENTS", "amount": 1}}'
            )
            sock.sendall(
                b"POST /v1/reservations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                + f"X-Cycles-API-Key: {secret}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            time.sleep(1.0)
            sock.sendall(body[10:])
            sock.settimeout(start_timeout(10))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_header_deadline_option() -> None:
    assert "http" in uvicorn_options(Settings())
    assert "http" not in uvicorn_options(Settings(header_timeout_s=0))
    args = build_parser().parse_args(["--header-timeout", "2.5"])
    assert settings_from_args(args).header_timeout_s == 2.5
