"""Retry of ambiguous outcomes: same request and idempotency key, exponential backoff with
jitter, Retry-After honoured, and a CyclesUnavailableError (never a denial) when it gives up."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

import runcycles_core as rc
from runcycles_core import client as client_module

from .conftest import Recorder, error_body, make_config

ACTION = {"kind": "tool.call", "name": "search"}
COMMITTED = {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": 5}}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records every retry wait instead of sleeping."""
    waits: list[float] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def fake_async_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(client_module, "_sleep", fake_sleep)
    monkeypatch.setattr(client_module, "_async_sleep", fake_async_sleep)
    return waits


def _fail_then(recorder: Recorder, failures: list[Any], final: httpx.Response) -> None:
    """Answer with ``failures`` (responses, or exceptions to raise) in turn, then ``final``
    for every later request."""
    script = [*failures, final]

    def handler(request: httpx.Request) -> httpx.Response:
        step = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, httpx.Response)
        return step

    recorder.handler = handler


def _commit(client: rc.CyclesClient) -> rc.CommitResponse:
    return client.commit_reservation(
        "r-1", idempotency_key="commit-key-1", actual={"unit": "TOKENS", "amount": 5}
    )


def _assert_same_request_every_time(recorder: Recorder) -> None:
    assert len(recorder.requests) >= 2
    first = recorder.requests[0]
    for req in recorder.requests[1:]:
        assert req.content == first.content
        assert req.headers["X-Idempotency-Key"] == first.headers["X-Idempotency-Key"]
        assert req.headers["X-Cycles-Trace-Id"] == first.headers["X-Cycles-Trace-Id"]
        assert req.url == first.url


def test_connect_error_then_success_reuses_the_key(recorder: Recorder, sleeps: list[float]) -> None:
    _fail_then(
        recorder,
        [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
        httpx.Response(200, json=COMMITTED),
    )
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        result = _commit(client)
    assert result.charged.amount == 5
    assert result.meta is not None
    assert result.meta.attempts == 3
    assert len(recorder.requests) == 3
    _assert_same_request_every_time(recorder)
    assert recorder.body(0)["idempotency_key"] == "commit-key-1"
    assert len(sleeps) == 2


async def test_async_connect_error_then_success_reuses_the_key(
    recorder: Recorder, sleeps: list[float]
) -> None:
    _fail_then(
        recorder,
        [httpx.ConnectError("refused"), httpx.Response(502, text="bad gateway")],
        httpx.Response(200, json=COMMITTED),
    )
    async with rc.AsyncCyclesClient(make_config(), transport=recorder.async_transport()) as client:
        result = await client.commit_reservation(
            "r-1", idempotency_key="commit-key-1", actual={"unit": "TOKENS", "amount": 5}
        )
    assert result.meta is not None
    assert result.meta.attempts == 3
    _assert_same_request_every_time(recorder)
    assert len(sleeps) == 2


def test_generated_key_is_kept_across_retries(recorder: Recorder, sleeps: list[float]) -> None:
    _fail_then(
        recorder,
        [httpx.Response(503, json=error_body("INTERNAL_ERROR"))],
        httpx.Response(
            200, json={"decision": "ALLOW", "reservation_id": "r-1", "affected_scopes": []}
        ),
    )
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        client.create_reservation(action=ACTION, estimate={"unit": "TOKENS", "amount": 1})
    _assert_same_request_every_time(recorder)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_a_floor_on_the_wait(
    recorder: Recorder, sleeps: list[float], status: int
) -> None:
    code = "LIMIT_EXCEEDED" if status == 429 else "INTERNAL_ERROR"
    _fail_then(
        recorder,
        [httpx.Response(status, json=error_body(code), headers={"Retry-After": "7"})],
        httpx.Response(200, json=COMMITTED),
    )
    config = make_config(retry_initial_delay=0.1, retry_max_delay=30.0)
    with rc.CyclesClient(config, transport=recorder.sync_transport()) as client:
        _commit(client)
    assert sleeps == [7.0]


def test_http_date_retry_after_is_ignored(recorder: Recorder, sleeps: list[float]) -> None:
    _fail_then(
        recorder,
        [
            httpx.Response(
                429,
                json=error_body("LIMIT_EXCEEDED"),
                headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
            )
        ],
        httpx.Response(200, json=COMMITTED),
    )
    config = make_config(retry_initial_delay=0.25, retry_max_delay=30.0, retry_jitter=0.0)
    with rc.CyclesClient(config, transport=recorder.sync_transport()) as client:
        _commit(client)
    assert sleeps == [0.25]


async def test_async_retry_after_is_a_floor_on_the_wait(
    recorder: Recorder, sleeps: list[float]
) -> None:
    _fail_then(
        recorder,
        [httpx.Response(429, json=error_body("LIMIT_EXCEEDED"), headers={"Retry-After": "3"})],
        httpx.Response(200, json=COMMITTED),
    )
    config = make_config(retry_initial_delay=0.1, retry_max_delay=30.0)
    async with rc.AsyncCyclesClient(config, transport=recorder.async_transport()) as client:
        await client.commit_reservation(
            "r-1", idempotency_key="k", actual={"unit": "TOKENS", "amount": 5}
        )
    assert sleeps == [3.0]


def test_retry_after_is_really_waited(recorder: Recorder) -> None:
    _fail_then(
        recorder,
        [httpx.Response(429, json=error_body("LIMIT_EXCEEDED"), headers={"Retry-After": "1"})],
        httpx.Response(200, json=COMMITTED),
    )
    config = make_config(retry_initial_delay=0.01, retry_max_delay=5.0)
    with rc.CyclesClient(config, transport=recorder.sync_transport()) as client:
        started = time.monotonic()
        _commit(client)
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0


def test_retry_after_beyond_the_maximum_wait_gives_up_at_once(
    recorder: Recorder, sleeps: list[float]
) -> None:
    _fail_then(
        recorder,
        [],
        httpx.Response(429, json=error_body("LIMIT_EXCEEDED"), headers={"Retry-After": "120"}),
    )
    config = make_config(retry_max_delay=30.0)
    client = rc.CyclesClient(config, transport=recorder.sync_transport())
    with client, pytest.raises(rc.RateLimitedError) as info:
        _commit(client)
    assert sleeps == []
    assert len(recorder.requests) == 1
    assert info.value.retry_after == 120.0
    assert info.value.status == 429
    assert info.value.error_code == "LIMIT_EXCEEDED"


def test_backoff_is_exponential_and_capped(recorder: Recorder, sleeps: list[float]) -> None:
    _fail_then(recorder, [], httpx.Response(500, json=error_body("INTERNAL_ERROR")))
    config = make_config(
        retry_max_attempts=6,
        retry_initial_delay=0.5,
        retry_multiplier=2.0,
        retry_max_delay=5.0,
        retry_jitter=0.0,
    )
    client = rc.CyclesClient(config, transport=recorder.sync_transport())
    with client, pytest.raises(rc.CyclesUnavailableError) as info:
        _commit(client)
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert info.value.attempts == 7
    assert len(recorder.requests) == 7
    _assert_same_request_every_time(recorder)


def test_jitter_stays_within_its_share(recorder: Recorder, sleeps: list[float]) -> None:
    _fail_then(recorder, [], httpx.Response(500, json=error_body("INTERNAL_ERROR")))
    config = make_config(
        retry_max_attempts=40, retry_initial_delay=1.0, retry_multiplier=1.0, retry_max_delay=1.0,
        retry_jitter=0.5,
    )  # fmt: skip
    client = rc.CyclesClient(config, transport=recorder.sync_transport())
    with client, pytest.raises(rc.CyclesUnavailableError):
        _commit(client)
    assert len(sleeps) == 40
    assert all(0.5 <= s <= 1.0 for s in sleeps)
    assert len(set(sleeps)) > 1, "jitter must vary the waits"


def test_server_errors_exhausted_raise_unavailable(recorder: Recorder, sleeps: list[float]) -> None:
    _fail_then(
        recorder,
        [],
        httpx.Response(
            503,
            json=error_body("INTERNAL_ERROR", "budget store unavailable"),
            headers={"Retry-After": "0"},
        ),
    )
    config = make_config(retry_max_attempts=2)
    client = rc.CyclesClient(config, transport=recorder.sync_transport())
    with client, pytest.raises(rc.CyclesUnavailableError) as info:
        _commit(client)
    err = info.value
    assert type(err) is rc.CyclesUnavailableError
    assert not isinstance(err, rc.CyclesProtocolError)
    assert not isinstance(err, rc.BudgetExceededError)
    assert (err.status, err.error_code, err.attempts) == (503, "INTERNAL_ERROR", 3)
    assert err.request_id == "req-1"
    assert "budget store unavailable" in str(err)


def test_transport_errors_exhausted_raise_transport_error(
    recorder: Recorder, sleeps: list[float]
) -> None:
    cause = httpx.ConnectError("connection refused")

    def handler(request: httpx.Request) -> httpx.Response:
        raise cause

    recorder.handler = handler
    config = make_config(retry_max_attempts=3)
    client = rc.CyclesClient(config, transport=recorder.sync_transport())
    with client, pytest.raises(rc.CyclesTransportError) as info:
        client.get_balances(tenant="acme")
    assert info.value.__cause__ is cause
    assert info.value.attempts == 4
    assert info.value.status == 0
    assert len(recorder.requests) == 4
    assert "X-Idempotency-Key" not in recorder.last.headers


async def test_async_rate_limit_exhausted_raises_rate_limited(
    recorder: Recorder, sleeps: list[float]
) -> None:
    _fail_then(recorder, [], httpx.Response(429, json=error_body("LIMIT_EXCEEDED")))
    config = make_config(retry_max_attempts=2)
    async with rc.AsyncCyclesClient(config, transport=recorder.async_transport()) as client:
        with pytest.raises(rc.RateLimitedError) as info:
            await client.decide(action=ACTION, estimate={"unit": "TOKENS", "amount": 1})
    assert isinstance(info.value, rc.CyclesUnavailableError)
    assert info.value.attempts == 3
    assert len(sleeps) == 2
    _assert_same_request_every_time(recorder)


def test_malformed_success_is_ambiguous_and_retried(
    recorder: Recorder, sleeps: list[float]
) -> None:
    _fail_then(
        recorder,
        [
            httpx.Response(200, json={"status": "COMMITTED"}),  # charged missing
            httpx.Response(200, text="not json"),
            httpx.Response(202, json=COMMITTED),  # not the status the spec promises
        ],
        httpx.Response(200, json=COMMITTED),
    )
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        result = _commit(client)
    assert result.meta is not None
    assert result.meta.attempts == 4
    _assert_same_request_every_time(recorder)


def test_malformed_success_exhausted_raises_invalid_response(
    recorder: Recorder, sleeps: list[float]
) -> None:
    _fail_then(recorder, [], httpx.Response(200, json={"status": "COMMITTED"}))
    config = make_config(retry_max_attempts=1)
    client = rc.CyclesClient(config, transport=recorder.sync_transport())
    with client, pytest.raises(rc.InvalidResponseError) as info:
        _commit(client)
    assert info.value.attempts == 2
    assert "CommitResponse" in str(info.value)


def test_retry_disabled_sends_once(recorder: Recorder, sleeps: list[float]) -> None:
    _fail_then(recorder, [], httpx.Response(502, text="bad gateway"))
    config = make_config(retry_enabled=False)
    client = rc.CyclesClient(config, transport=recorder.sync_transport())
    with client, pytest.raises(rc.CyclesUnavailableError) as info:
        _commit(client)
    assert info.value.attempts == 1
    assert len(recorder.requests) == 1
    assert sleeps == []


def test_definite_rejection_after_a_retry_is_raised_as_is(
    recorder: Recorder, sleeps: list[float]
) -> None:
    # The first commit applied but its answer was lost; the same-key retry is then answered
    # with the stored response by a conformant server. Here a non-replaying server says
    # FINALIZED: the caller must see that, not an outage.
    _fail_then(
        recorder,
        [httpx.ReadTimeout("lost")],
        httpx.Response(409, json=error_body("RESERVATION_FINALIZED")),
    )
    client = rc.CyclesClient(make_config(), transport=recorder.sync_transport())
    with client, pytest.raises(rc.ReservationFinalizedError):
        _commit(client)
    assert len(recorder.requests) == 2
