"""Trace propagation: the caller's W3C ``traceparent`` / ``X-Cycles-Trace-Id`` reach the server.

Per call, the first of these that is present wins:

1. an explicit ``traceparent=`` / ``trace_id=`` argument;
2. the trace set with :func:`trace_context` around the call (a ``ContextVar``, so it follows
   asyncio tasks and is restored on exit, nested blocks included);
3. the active OpenTelemetry span, when ``opentelemetry-api`` is installed (an optional
   dependency; nothing is imported otherwise);
4. a trace id minted for this logical call, so its retries and its error share one id.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["TraceContext", "current_trace", "trace_context"]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_ZERO_TRACE = "0" * 32


def _check_traceparent(value: str) -> str:
    m = _TRACEPARENT.match(value)
    if not m or m.group(1) == _ZERO_TRACE or m.group(2) == "0" * 16:
        raise ValueError(f"invalid traceparent {value!r} (expected 00-<32 hex>-<16 hex>-<2 hex>)")
    return m.group(1)


def _check_trace_id(value: str) -> str:
    if not _TRACE_ID.match(value) or value == _ZERO_TRACE:
        raise ValueError(f"invalid trace id {value!r} (expected 32 lowercase hex, not all zero)")
    return value


@dataclass(frozen=True)
class TraceContext:
    """A validated trace: ``trace_id`` always set, ``traceparent`` when the caller had one."""

    trace_id: str
    traceparent: str | None = None

    @classmethod
    def of(cls, traceparent: str | None = None, trace_id: str | None = None) -> TraceContext:
        """Validate the inputs (``ValueError`` if malformed). A ``traceparent`` decides the
        trace id, as it does on the server; a disagreeing ``trace_id`` is an error."""
        if traceparent is not None:
            from_parent = _check_traceparent(traceparent)
            if trace_id is not None and _check_trace_id(trace_id) != from_parent:
                raise ValueError("trace_id disagrees with the traceparent's trace id")
            return cls(trace_id=from_parent, traceparent=traceparent)
        if trace_id is not None:
            return cls(trace_id=_check_trace_id(trace_id))
        return cls.new()

    @classmethod
    def new(cls) -> TraceContext:
        trace_id = _ZERO_TRACE
        while trace_id == _ZERO_TRACE:
            trace_id = secrets.token_hex(16)
        return cls(trace_id=trace_id)

    def headers(self) -> dict[str, str]:
        out = {"X-Cycles-Trace-Id": self.trace_id}
        if self.traceparent is not None:
            out["traceparent"] = self.traceparent
        return out


_CURRENT: ContextVar[TraceContext | None] = ContextVar("runcycles_trace", default=None)


def current_trace() -> TraceContext | None:
    """The trace set by the innermost enclosing :func:`trace_context`, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def trace_context(
    traceparent: str | None = None, trace_id: str | None = None
) -> Iterator[TraceContext]:
    """Send this trace with every Cycles call made inside the block.

    With no arguments a fresh trace id is minted, which groups several calls under one id.
    """
    ctx = TraceContext.of(traceparent, trace_id)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def _from_opentelemetry() -> TraceContext | None:
    """The active OpenTelemetry span as a trace, if the API is installed and a span is live."""
    # No span can be active unless something imported the API already; looking it up in
    # sys.modules avoids a failed import (a sys.path search) on every call without it.
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    flags = int(ctx.trace_flags) & 0xFF
    traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags:02x}"
    return TraceContext(trace_id=f"{ctx.trace_id:032x}", traceparent=traceparent)


def resolve_trace(traceparent: str | None, trace_id: str | None) -> TraceContext:
    """The trace for one call (see the module docstring for the precedence)."""
    if traceparent is not None or trace_id is not None:
        return TraceContext.of(traceparent, trace_id)
    return _CURRENT.get() or _from_opentelemetry() or TraceContext.new()
