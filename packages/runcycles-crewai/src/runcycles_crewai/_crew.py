"""``cycles_crew``: the step gate, the tool gate and the step callback for one crew, wired in
one call and scoped to the block (CrewAI's scoped hooks: nothing is left registered globally).

Where CrewAI lets a hook stop a run, and where it does not:

- ``EXECUTION_START`` and ``PRE_STEP`` (before each task) accept a ``HookAborted``: raising
  :class:`~runcycles_crewai.CrewBudgetExceeded` there ends ``kickoff()`` before any provider
  call. The gate raises a denial an earlier step could not (see tools).
- ``PRE_TOOL_CALL``: a tool budgeted in ``tool_budgets`` is reserved as action kind
  ``tool.<name>`` and committed in ``POST_TOOL_CALL``. A denied tool does not run, but CrewAI
  turns any hook abort into a tool result the agent reads; so the denial's message is that
  result, and the denial is kept for the next LLM call (``PRE_MODEL_CALL``), which raises it.
- ``step_callback`` runs after a step and cannot stop anything: it records each step's tool
  usage on the run (:attr:`CrewRun.steps`), chaining any callback the crew already had.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from crewai.hooks.dispatch import InterceptionPoint, register_scoped, scoped_hooks

from runcycles_core import BudgetExceededError
from runcycles_core.lifecycle import Guard
from runcycles_core.plugin import CyclesSettings, tool_guard

from ._scope import CrewRun, StepRecord, cycles_run
from ._settings import resolve_settings

__all__ = ["cycles_crew"]


class _ToolGate:
    """Tool reservations between PRE_TOOL_CALL and POST_TOOL_CALL of one run.

    CrewAI builds a new hook context for the post hook but hands both the same ``tool_input``
    object, which is what pairs them.
    """

    def __init__(self, settings: CyclesSettings, run: CrewRun) -> None:
        self.settings = settings
        self.run = run
        self._open: dict[int, tuple[object, Guard | BudgetExceededError]] = {}
        self._lock = threading.Lock()

    def before(self, ctx: Any) -> None:
        name = str(ctx.tool_name)
        guard = tool_guard(self.settings, name, subject=self.run.subject)
        if guard is None:
            return
        try:
            guard.reserve()
        except BudgetExceededError as denial:
            self.run.defer(denial)
            with self._lock:
                self._open[id(ctx.tool_input)] = (ctx.tool_input, denial)
            raise
        with self._lock:
            self._open[id(ctx.tool_input)] = (ctx.tool_input, guard)

    def after(self, ctx: Any) -> str | None:
        with self._lock:
            entry = self._open.pop(id(ctx.tool_input), None)
        if entry is None:
            return None
        held = entry[1]
        if isinstance(held, BudgetExceededError):
            # What the agent reads instead of "Tool execution blocked by hook".
            return f"Tool {ctx.tool_name} was not run: budget denied ({held.error_code})."
        held.commit()
        return None


def _step_recorder(run: CrewRun, chained: Any) -> Any:
    def step_callback(step: Any) -> Any:
        # CrewAI calls it with the ToolResult and then the AgentAction of a tool step; the
        # action names the tool and carries its result.
        tool = getattr(step, "tool", None)
        if isinstance(tool, str):
            result = getattr(step, "result", None)
            run.record(
                StepRecord(
                    tool=tool,
                    tool_input=getattr(step, "tool_input", None),
                    result=result if isinstance(result, str) else None,
                    blocked=isinstance(result, str) and "budget denied" in result,
                )
            )
        return chained(step) if chained is not None else None

    return step_callback


@contextlib.contextmanager
def cycles_crew(
    crew: Any,
    settings: CyclesSettings | None = None,
    *,
    subject: Mapping[str, str | None] | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **settings_kwargs: Any,
) -> Iterator[CrewRun]:
    """Gate ``crew``'s steps and tools while the block runs; yields the run's state.

    ``settings`` (or its fields as keywords; ``tool_budgets=`` says which tools to gate) is
    used for tool reservations; LLM calls are budgeted by giving agents a
    :class:`~runcycles_crewai.CyclesLLM`. ``subject`` / ``dimensions`` / ``metadata`` apply
    to every call of the block, LLM calls included (as :func:`cycles_run`)::

        with cycles_crew(crew, client=client, tool_budgets={"search": 5_000}):
            crew.kickoff()
    """
    resolved = resolve_settings(settings, settings_kwargs)
    chained = getattr(crew, "step_callback", None)
    with cycles_run(subject=subject, dimensions=dimensions, metadata=metadata) as run:
        gate = _ToolGate(resolved, run)

        def step_gate(ctx: Any) -> None:
            run.raise_pending()

        with scoped_hooks():
            register_scoped(InterceptionPoint.EXECUTION_START, step_gate)
            register_scoped(InterceptionPoint.PRE_STEP, step_gate)
            register_scoped(InterceptionPoint.PRE_MODEL_CALL, step_gate)
            register_scoped(InterceptionPoint.PRE_TOOL_CALL, gate.before)
            register_scoped(InterceptionPoint.POST_TOOL_CALL, gate.after)
            crew.step_callback = _step_recorder(run, chained)
            try:
                yield run
            finally:
                crew.step_callback = chained
