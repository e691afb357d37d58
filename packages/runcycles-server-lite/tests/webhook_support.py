"""Real HTTP webhook receivers on loopback, and the shared server fixture, for the webhook tests."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from runcycles_server_lite.testing import ServerHandle, running_server

# Loopback receivers are blocked by default (SSRF guard); the tests' receivers live there.
LOOPBACK_OK = {"blocked_cidr_ranges": ["10.0.0.0/8"], "allow_http": True}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(self.body)
        return out


@dataclass
class Receiver:
    """Answers every POST with ``status`` (after waiting on ``gate`` if it is set)."""

    url: str
    status: int = 200
    gate: threading.Event | None = None
    received: list[Received] = field(default_factory=list)

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [r.event for r in self.received if event_type in (None, r.event["event_type"])]


@contextlib.contextmanager
def receiver(status: int = 200) -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if rec.gate is not None:
                rec.gate.wait(10)
            rec.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(url=f"http://127.0.0.1:{httpd.server_address[1]}/hook", status=status))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        if holder[0].gate is not None:
            holder[0].gate.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the "down" receiver)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server whose dispatcher only runs when a test ticks it (every tick is a fresh
    Dispatcher, as after a restart), with loopback receivers allowed."""
    with running_server(tmp_path_factory.mktemp("hooks"), webhook_interval_s=0) as s:
        with s.admin_client() as c:
            assert c.put("/v1/admin/config/webhook-security", json=LOOPBACK_OK).status_code == 200
        yield s


@pytest.fixture
def admin(srv: ServerHandle) -> Iterator[httpx.Client]:
    with srv.admin_client() as c:
        yield c
