"""With no server listening, a call fails fast, says where it tried and what to change, and
logs one line (not one per attempt). Against a real closed port, not a mock."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest

import runcycles_core as rc
from runcycles_core import client as client_module

from .conftest import Recorder, make_config


@pytest.fixture
def closed_url() -> str:
    """A local URL nothing listens on: bind a port, then close it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _down_config(url: str, **overrides: object) -> rc.CyclesConfig:
    return rc.CyclesConfig(base_url=url, api_key="k", tenant="acme", **overrides)  # type: ignore[arg-type]


def _check(err: rc.CyclesTransportError, url: str, caplog: pytest.LogCaptureFixture) -> None:
    text = str(err)
    assert f"cannot reach the Cycles server at {url}" in text
    assert "CYCLES_BASE_URL" in text and "retry_connect_budget" in text
    assert "CYCLES_RETRY_CONNECT_BUDGET" in text and "(now 2s)" in text
    assert isinstance(err.__cause__, httpx.ConnectError)
    assert 2 <= err.attempts <= 4  # retried briefly, not the full 6-attempt schedule
    records = [r for r in caplog.records if r.name.startswith("runcycles_core")]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert url in warnings[0].getMessage()


def test_refused_connection_fails_fast_and_logs_once(
    closed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="runcycles_core")
    client = rc.CyclesClient(_down_config(closed_url))
    started = time.monotonic()
    with client, pytest.raises(rc.CyclesTransportError) as info:
        client.get_balances(tenant="acme")
    assert time.monotonic() - started < 8  # generous: the budget is 2 s (it was 20.9 s)
    _check(info.value, closed_url, caplog)


async def test_async_refused_connection_fails_fast_and_logs_once(
    closed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="runcycles_core")
    started = time.monotonic()
    async with rc.AsyncCyclesClient(_down_config(closed_url)) as client:
        with pytest.raises(rc.CyclesTransportError) as info:
            await client.get_balances(tenant="acme")
    assert time.monotonic() - started < 8
    _check(info.value, closed_url, caplog)


def test_zero_budget_tries_once(closed_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = rc.CyclesClient(_down_config(closed_url, retry_connect_budget=0))
    with client, pytest.raises(rc.CyclesTransportError) as info:
        client.get_balances(tenant="acme")
    assert info.value.attempts == 1
    assert "1 attempt in" in str(info.value) and "(now 0s)" in str(info.value)


def test_connect_budget_from_env_and_validated() -> None:
    env = {"CYCLES_BASE_URL": "http://x", "CYCLES_API_KEY": "k"}
    assert rc.CyclesConfig.from_env(environ=env).retry_connect_budget == 2.0
    env["CYCLES_RETRY_CONNECT_BUDGET"] = "7.5"
    assert rc.CyclesConfig.from_env(environ=env).retry_policy.connect_budget == 7.5
    with pytest.raises(ValueError, match="retry_connect_budget"):
        rc.CyclesConfig(base_url="http://x", api_key="k", retry_connect_budget=-1)


def test_server_errors_keep_the_full_retry_schedule(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # 5xx and timeouts are transient, not "down": the connect budget does not cut them short.
    waits: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", waits.append)
    script: list[Exception | httpx.Response] = [
        httpx.ReadTimeout("slow"),
        httpx.Response(503, text="busy"),
        httpx.Response(502, text="bad gateway"),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        step = script.pop(0) if script else httpx.Response(503, text="busy")
        if isinstance(step, Exception):
            raise step
        return step

    recorder.handler = handler
    caplog.set_level(logging.DEBUG, logger="runcycles_core")
    config = make_config(
        retry_max_attempts=5, retry_initial_delay=1.0, retry_max_delay=30.0, retry_jitter=0.0
    )
    client = rc.CyclesClient(config, transport=recorder.sync_transport())
    with client, pytest.raises(rc.CyclesUnavailableError) as info:
        client.get_balances(tenant="acme")
    assert info.value.attempts == 6 and waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 5
