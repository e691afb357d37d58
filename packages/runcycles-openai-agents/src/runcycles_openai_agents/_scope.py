"""Run identity: which run a model or tool call belongs to, and its stable idempotency keys.

Keys are ``<run id>:turn<n>`` for the n-th model call of a run, ``<run id>:turn<n>:retry<k>``
when the SDK retries that call (``ModelSettings.retry`` re-sends the same input object after a
failure; the failed attempt was released, so the retry needs a reservation of its own), and
``<run id>:tool:<call id>`` for tool calls. Core derives ``:reserve`` / ``:commit`` /
``:release`` from them, so re-sending a step with the same key never pays twice.

The run id is the one given to :func:`cycles_run` (stable across a replay of the same
execution, e.g. a workflow engine re-running an activity), else a fresh random id per run: the
SDK makes a new trace object (a ``NoOpTrace`` when tracing is off) current for every
``Runner.run``, and the scope is attached to it, so concurrent runs never share keys.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from agents.tracing import get_current_trace

__all__ = ["RunScope", "current_scope", "cycles_run"]


@dataclass
class RunScope:
    """One run's identity, per-run subject overrides and call counters."""

    run_id: str
    subject: Mapping[str, str | None] | None = None
    dimensions: Mapping[str, str] | None = None
    metadata: Mapping[str, Any] | None = None
    _turns: int = 0
    _retries: int = 0
    _last_input: object = None
    _last_failed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def model_key(self, input: object = None) -> str:
        """The base idempotency key of the next model call; ``input`` (the request's input
        object) tells a retry of the previous, failed call from the next turn."""
        with self._lock:
            retry = self._last_failed and input is not None and input is self._last_input
            if retry:
                self._retries += 1
            else:
                self._turns += 1
                self._retries = 0
            self._last_input, self._last_failed = input, False
            key = f"{self.run_id}:turn{self._turns}"
            return f"{key}:retry{self._retries}" if retry else key

    def call_failed(self, input: object = None) -> None:
        """Record that the call made with ``input`` failed (so a re-send is a retry)."""
        with self._lock:
            if input is not None and input is self._last_input:
                self._last_failed = True

    def tool_key(self, call_id: str | None) -> str:
        """The base key of a tool call (random when the SDK gives no call id)."""
        return f"{self.run_id}:tool:{call_id or uuid.uuid4().hex}"


_explicit: ContextVar[RunScope | None] = ContextVar("runcycles_openai_agents_run", default=None)
_by_trace: weakref.WeakKeyDictionary[Any, RunScope] = weakref.WeakKeyDictionary()
_by_trace_lock = threading.Lock()


@contextlib.contextmanager
def cycles_run(
    run_id: str | None = None,
    *,
    subject: Mapping[str, str | None] | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[RunScope]:
    """Scope the model and tool calls made inside the block (e.g. one ``Runner.run``).

    ``run_id`` names this execution: replaying it (same id, same steps) never pays twice;
    use a fresh id for every new execution. ``subject`` overrides the configured subject levels
    (``tenant`` … ``toolset``) for these calls, ``dimensions`` and ``metadata`` are merged into
    the configured ones. Works in sync and async code; tasks started inside inherit the scope.
    """
    scope = RunScope(
        run_id=run_id or uuid.uuid4().hex,
        subject=subject,
        dimensions=dimensions,
        metadata=metadata,
    )
    token = _explicit.set(scope)
    try:
        yield scope
    finally:
        _explicit.reset(token)


def current_scope() -> RunScope:
    """The scope of the calling run: the innermost :func:`cycles_run`, else one attached to the
    SDK's current trace, else a fresh one (a model called outside any run)."""
    scope = _explicit.get()
    if scope is not None:
        return scope
    trace = get_current_trace()
    if trace is None:
        return RunScope(run_id=uuid.uuid4().hex)
    with _by_trace_lock:
        try:
            found = _by_trace.get(trace)
            if found is None:
                found = _by_trace[trace] = RunScope(run_id=uuid.uuid4().hex)
        except TypeError:  # a custom trace type without weak references: scope per call
            return RunScope(run_id=uuid.uuid4().hex)
        return found
