"""Trace propagation: explicit traceparent / trace id, the contextvar, and the error's ids."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import runcycles_core as rc

from .conftest import Recorder, error_body, make_config

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
BALANCES = {"balances": []}


def test_explicit_traceparent_is_sent_with_its_trace_id(recorder: Recorder) -> None:
    recorder.reply(200, BALANCES)
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        client.get_balances(tenant="acme", traceparent=PARENT)
    assert recorder.last.headers["traceparent"] == PARENT
    assert recorder.last.headers["X-Cycles-Trace-Id"] == TRACE


def test_explicit_trace_id_alone(recorder: Recorder) -> None:
    recorder.reply(200, BALANCES)
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        client.get_balances(tenant="acme", trace_id="ab" * 16)
    assert recorder.last.headers["X-Cycles-Trace-Id"] == "ab" * 16
    assert "traceparent" not in recorder.last.headers


def test_context_trace_flows_through_and_is_restored(recorder: Recorder) -> None:
    for _ in range(4):
        recorder.reply(200, BALANCES)
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        with rc.trace_context(traceparent=PARENT) as outer:
            client.get_balances(tenant="acme")
            with rc.trace_context(trace_id="cd" * 16):
                client.get_balances(tenant="acme")
            assert rc.current_trace() == outer
            client.get_balances(tenant="acme", trace_id="ef" * 16)  # explicit wins
        assert rc.current_trace() is None
        client.get_balances(tenant="acme")
    sent = [r.headers["X-Cycles-Trace-Id"] for r in recorder.requests]
    assert sent[:3] == [TRACE, "cd" * 16, "ef" * 16]
    assert sent[3] not in (TRACE, "cd" * 16, "ef" * 16)
    assert recorder.requests[0].headers["traceparent"] == PARENT
    assert "traceparent" not in recorder.requests[1].headers


def test_without_a_trace_each_call_gets_its_own(recorder: Recorder) -> None:
    recorder.reply(200, BALANCES)
    recorder.reply(200, BALANCES)
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        client.get_balances(tenant="acme")
        client.get_balances(tenant="acme")
    first, second = (r.headers["X-Cycles-Trace-Id"] for r in recorder.requests)
    assert first != second


async def test_async_context_trace_is_per_task(recorder: Recorder) -> None:
    recorder.handler = lambda request: httpx.Response(200, json=BALANCES)
    async with rc.AsyncCyclesClient(make_config(), transport=recorder.async_transport()) as client:

        async def call_under(trace_id: str) -> None:
            with rc.trace_context(trace_id=trace_id):
                await asyncio.sleep(0)
                await client.get_balances(tenant="acme")

        await asyncio.gather(*(call_under(f"{i:032x}") for i in range(1, 6)))
    sent = sorted(r.headers["X-Cycles-Trace-Id"] for r in recorder.requests)
    assert sent == [f"{i:032x}" for i in range(1, 6)]


def test_errors_carry_the_trace_id_sent_when_the_server_omits_it(recorder: Recorder) -> None:
    body = error_body("NOT_FOUND")
    del body["trace_id"]
    recorder.reply(404, body)
    client = rc.CyclesClient(make_config(), transport=recorder.sync_transport())
    with client, pytest.raises(rc.NotFoundError) as info:
        client.get_reservation("missing", trace_id="ab" * 16)
    assert info.value.trace_id == "ab" * 16


@pytest.mark.parametrize(
    ("traceparent", "trace_id"),
    [
        ("garbage", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (None, "ABCDEF" + "0" * 26),
        (None, "0" * 32),
        (PARENT, "ab" * 16),
    ],
)
def test_malformed_traces_are_rejected_before_sending(
    recorder: Recorder, traceparent: str | None, trace_id: str | None
) -> None:
    client = rc.CyclesClient(make_config(), transport=recorder.sync_transport())
    with client, pytest.raises(ValueError, match="trace"):
        client.get_balances(tenant="acme", traceparent=traceparent, trace_id=trace_id)
    assert recorder.requests == []


def _otel_span(trace_id: int, span_id: int) -> Any:
    from opentelemetry import trace

    context = trace.SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.use_span(trace.NonRecordingSpan(context))


def test_active_opentelemetry_span_is_propagated(recorder: Recorder) -> None:
    recorder.reply(200, BALANCES)
    recorder.reply(200, BALANCES)
    client = rc.CyclesClient(make_config(), transport=recorder.sync_transport())
    with client, _otel_span(int(TRACE, 16), 0x00F067AA0BA902B7):
        client.get_balances(tenant="acme")
        with rc.trace_context(trace_id="cd" * 16):  # an explicit context wins over OTel
            client.get_balances(tenant="acme")
    first, second = recorder.requests
    assert first.headers["traceparent"] == PARENT
    assert first.headers["X-Cycles-Trace-Id"] == TRACE
    assert second.headers["X-Cycles-Trace-Id"] == "cd" * 16
    assert "traceparent" not in second.headers


async def test_async_active_opentelemetry_span_is_propagated(recorder: Recorder) -> None:
    recorder.reply(200, BALANCES)
    async with rc.AsyncCyclesClient(make_config(), transport=recorder.async_transport()) as client:
        with _otel_span(0xABC, 0xDEF):
            await client.get_balances(tenant="acme")
    assert recorder.last.headers["traceparent"] == f"00-{0xABC:032x}-{0xDEF:016x}-01"
