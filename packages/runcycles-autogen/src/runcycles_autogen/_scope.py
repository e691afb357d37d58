"""Per-run state shared by the model clients and workbenches of one run: subject overrides,
the errors the plugin raised (to give a team's caller the typed error back), a tool denial
waiting for the next model call, and the model streams still open.

AutoGen's teams run their agents on an agent runtime whose tasks start inside ``team.run`` /
``run_stream``, so they inherit the caller's context: a :class:`CyclesRun` set by
:func:`cycles_run` before the team starts is the one its agents see.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any
from weakref import WeakSet

from runcycles_core.errors import BudgetExceededError

__all__ = ["CyclesRun", "cycles_run", "current_run", "record_error", "unwrap_team_error"]

# Errors the plugin raised anywhere, newest last: how a team error is matched back to its
# typed original when the team ran outside any cycles_run (a runtime started elsewhere).
_RECENT: deque[BaseException] = deque(maxlen=64)
_RECENT_LOCK = threading.Lock()


def _serialized(error: BaseException) -> str:
    # What AutoGen's SerializableException makes of an error: "<type name>: <message>".
    return f"{type(error).__name__}: {error}"


def _matching(candidates: list[BaseException], error: BaseException) -> BaseException | None:
    text = str(error)
    for candidate in reversed(candidates):
        if candidate is error:
            return None  # already the typed original
        if text.startswith(_serialized(candidate)):
            return candidate
    return None


class CyclesRun:
    """One run's scope (see :func:`cycles_run`)."""

    def __init__(
        self,
        subject: Mapping[str, str | None] | None = None,
        dimensions: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.subject = subject
        self.dimensions = dimensions
        self.metadata = metadata
        self.errors: list[BaseException] = []
        """What the plugin raised in this run (denials, budget-server outages), oldest first."""
        self._pending: BaseException | None = None
        self._streams: WeakSet[AsyncGenerator[Any, None]] = WeakSet()
        self._lock = threading.Lock()
        self._token: Token[CyclesRun | None] | None = None

    # -- what the plugin raised ------------------------------------------------------------------
    @property
    def denial(self) -> BaseException | None:
        """The first budget denial of the run, if any."""
        with self._lock:
            return next((e for e in self.errors if isinstance(e, BudgetExceededError)), None)

    def record(self, error: BaseException) -> None:
        with self._lock:
            self.errors.append(error)

    def defer(self, error: BaseException) -> None:
        """Keep an error a tool gate could not raise (AutoGen hangs on a raising Workbench) for
        the next model call of the run, which raises it instead of reserving."""
        with self._lock:
            if self._pending is None:
                self._pending = error

    def raise_pending(self) -> None:
        """Raise the deferred error, if any (it stays pending: every later call raises it)."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            raise pending

    def unwrap(self, error: BaseException) -> BaseException | None:
        """The plugin's own error that ``error`` (a team's ``RuntimeError``) stands for."""
        with self._lock:
            candidates = list(self.errors)
        return _matching(candidates, error)

    # -- streams ---------------------------------------------------------------------------------
    def track(self, stream: AsyncGenerator[Any, None]) -> None:
        with self._lock:
            self._streams.add(stream)

    async def aclose_streams(self) -> None:
        """Close (and so settle, as stopped) the model streams of this run that nobody is
        iterating any more: AutoGen does not close the model stream when its consumer stops,
        and Python would only finalize it at garbage collection."""
        with self._lock:
            streams = list(self._streams)
            self._streams = WeakSet()
        for stream in streams:
            with contextlib.suppress(RuntimeError):  # running elsewhere: it settles itself
                await stream.aclose()

    # -- the scope -------------------------------------------------------------------------------
    def __enter__(self) -> CyclesRun:
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._reset()
        self._reraise_typed(exc)

    async def __aenter__(self) -> CyclesRun:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose_streams()
        finally:
            self._reset()
        self._reraise_typed(exc)

    def _reset(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            # A scope left from another context (an async generator finalized elsewhere)
            # cannot reset the variable there; that context is gone with it.
            with contextlib.suppress(ValueError):
                _current.reset(token)

    def _reraise_typed(self, exc: BaseException | None) -> None:
        if isinstance(exc, Exception):
            typed = self.unwrap(exc) or unwrap_team_error(exc)
            if typed is not None:
                raise typed from exc


_current: ContextVar[CyclesRun | None] = ContextVar("runcycles_autogen_run", default=None)


def cycles_run(
    *,
    subject: Mapping[str, str | None] | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> CyclesRun:
    """Scope one run of an agent or a team: ``with`` or ``async with`` it around the call.

    - ``subject`` overrides the configured subject levels (``workspace`` … ``toolset``) for the
      model and tool calls made inside; ``dimensions`` and ``metadata`` are merged in.
    - A team's ``RuntimeError`` that stands for an error the plugin raised (a budget denial, a
      budget-server outage) is re-raised as that typed error, with the ``RuntimeError`` as its
      ``__cause__``.
    - A tool denied by a :class:`~runcycles_autogen.CyclesWorkbench` makes every later model
      call of the run raise the denial.
    - ``async with`` also settles, when the block ends, model streams left open by a consumer
      that stopped early (AutoGen never closes them itself)::

        async with cycles_run(subject={"agent": "refunds"}):
            result = await team.run(task="Refund order 1234")
    """
    return CyclesRun(subject, dimensions, metadata)


def current_run() -> CyclesRun | None:
    """The innermost :func:`cycles_run` scope, if any."""
    return _current.get()


def record_error(error: BaseException) -> None:
    """Remember an error the plugin raised, in the current run and process-wide."""
    run = current_run()
    if run is not None:
        run.record(error)
    with _RECENT_LOCK:
        _RECENT.append(error)


def unwrap_team_error(error: BaseException) -> BaseException | None:
    """The plugin's own typed error (e.g. :class:`~runcycles_autogen.BudgetExceededError`)
    that a team's ``RuntimeError("BudgetExceededError: ...")`` stands for, or None.

    For code that runs a team without :func:`cycles_run`::

        try:
            await team.run(task=task)
        except RuntimeError as exc:
            raise unwrap_team_error(exc) or exc

    Matched by the serialized type name and message among the plugin's recent errors (this
    process): prefer :func:`cycles_run`, which matches within the run only.
    """
    with _RECENT_LOCK:
        candidates = list(_RECENT)
    return _matching(candidates, error)
