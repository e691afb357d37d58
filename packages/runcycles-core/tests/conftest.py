"""Shared fixtures: a recording ``httpx.MockTransport`` for wire-level tests and a real
server-lite for end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from runcycles_core import CyclesConfig

BASE_URL = "http://cycles.test"
API_KEY = "cyc_test_key"

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Recorder:
    """Answers requests with ``handler`` (or a queue of canned responses) and keeps them."""

    handler: Handler | None = None
    queue: list[httpx.Response] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.queue:
            return self.queue.pop(0)
        if self.handler is None:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        return self.handler(request)

    def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.queue.append(httpx.Response(status, json=body, headers=headers))

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)

    def sync_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def async_transport(self) -> httpx.MockTransport:
        async def handle(request: httpx.Request) -> httpx.Response:
            await request.aread()
            return self(request)

        return httpx.MockTransport(handle)


def make_config(**overrides: Any) -> CyclesConfig:
    """A config pointing at the mock server; no waiting between retries unless asked."""
    values: dict[str, Any] = {
        "base_url": BASE_URL,
        "api_key": API_KEY,
        "tenant": "acme",
        "retry_initial_delay": 0.0,
        "retry_max_delay": 0.0,
    }
    values.update(overrides)
    return CyclesConfig(**values)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def error_body(code: str, message: str = "nope", **extra: Any) -> dict[str, Any]:
    return {
        "error": code,
        "message": message,
        "request_id": "req-1",
        "trace_id": "ab" * 16,
        **extra,
    }


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real server-lite (embedded Redis or REDIS_URL) for the end-to-end tests."""
    from runcycles_server_lite.testing import running_server

    with running_server(tmp_path_factory.mktemp("store")) as srv:
        yield srv
