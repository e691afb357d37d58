"""Per-run state shared by :class:`CyclesLLM` and the crew hooks: subject overrides, the
denial a tool hook could not raise, and the steps the step callback recorded."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from runcycles_core import BudgetExceededError

__all__ = ["CrewRun", "StepRecord", "current_run", "cycles_run"]


@dataclass(frozen=True)
class StepRecord:
    """One agent step seen by the step callback: the tool it used (if any) and its outcome."""

    tool: str | None
    tool_input: object
    result: str | None
    blocked: bool


@dataclass
class CrewRun:
    """One run's per-run subject overrides, pending denial and recorded steps."""

    subject: Mapping[str, str | None] | None = None
    dimensions: Mapping[str, str] | None = None
    metadata: Mapping[str, Any] | None = None
    steps: list[StepRecord] = field(default_factory=list)
    _pending: BudgetExceededError | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def defer(self, denial: BudgetExceededError) -> None:
        """Keep a denial a hook could not raise (CrewAI turns a tool hook's abort into a tool
        result) for the next interception point that can stop the run."""
        with self._lock:
            if self._pending is None:
                self._pending = denial

    def raise_pending(self) -> None:
        """Raise the deferred denial, if any (it stays pending: every later gate raises it)."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            raise pending

    def record(self, step: StepRecord) -> None:
        with self._lock:
            self.steps.append(step)


_current: ContextVar[CrewRun | None] = ContextVar("runcycles_crewai_run", default=None)


@contextlib.contextmanager
def cycles_run(
    *,
    subject: Mapping[str, str | None] | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[CrewRun]:
    """Scope the LLM, step and tool calls made inside the block (e.g. one ``kickoff()``).

    ``subject`` overrides the configured subject levels (``workspace`` … ``toolset``) for these
    calls; ``dimensions`` and ``metadata`` are merged into the configured ones. CrewAI copies
    the context into the threads it starts, so this reaches its executors.
    """
    run = CrewRun(subject=subject, dimensions=dimensions, metadata=metadata)
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


def current_run() -> CrewRun | None:
    """The innermost :func:`cycles_run` (or :func:`~runcycles_crewai.cycles_crew`), if any."""
    return _current.get()
