"""Real HTTP webhook receivers on loopback for the delivery tests."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


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
