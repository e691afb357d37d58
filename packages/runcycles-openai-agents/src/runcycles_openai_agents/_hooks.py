"""``CyclesRunHooks``: budgets through ``Runner.run(agent, input, hooks=...)``.

- ``on_llm_start`` reserves (a denial propagates out of ``Runner.run`` unchanged, before the
  model is called) and ``on_llm_end`` commits the priced usage of the response. The SDK's own
  retries happen between the two, so they are one logical call here.
- ``on_tool_start`` gates budgeted tools as action kind ``tool.<name>`` and ``on_tool_end``
  commits the tool's estimate.
- The SDK has no error hook: a run that fails between a start and an end hook would leave a
  hold until its TTL. :meth:`CyclesRunHooks.run` settles such leftovers when ``Runner.run``
  returns or raises, :meth:`CyclesRunHooks.run_streamed` when its event stream ends however it
  ends; :meth:`CyclesRunHooks.release_pending` settles every leftover of the instance (use it
  when you call ``Runner.run`` yourself).

For streamed runs prefer :class:`~runcycles_openai_agents.CyclesModel`, which also settles a
stream the consumer abandons.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Hashable
from contextvars import ContextVar
from typing import Any

from agents import Agent, RunHooks, Runner
from agents.exceptions import UserError
from agents.items import ModelResponse, TResponseInputItem
from agents.models import get_default_model
from agents.result import RunResult, RunResultStreaming
from agents.run_context import RunContextWrapper
from agents.stream_events import StreamEvent
from agents.tool import Tool

from runcycles_core import BudgetExceededError as CoreBudgetExceededError
from runcycles_core.lifecycle import AsyncGuard, GuardState
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    areserve_model_step,
    areserve_tool_step,
    areserve_uncancellable,
    asettle_model_call,
    resolve_settings,
    uncancellable,
)

from ._errors import BudgetExceededError
from ._model import CyclesModel, _provider_of, discover_model_name
from ._scope import current_scope
from ._usage import received_output, request_messages, to_usage

__all__ = ["CyclesRunHooks", "CyclesRunResultStreaming"]

_SETTLED = (GuardState.COMMITTED, GuardState.RELEASED, GuardState.DENIED)
_ledger: ContextVar[list[AsyncGuard] | None] = ContextVar(
    "runcycles_openai_agents_ledger", default=None
)


class CyclesRunHooks(RunHooks[Any]):
    """Run hooks that reserve before each model and budgeted tool call and commit after.

    Args:
        settings: a :class:`~runcycles_core.plugin.CyclesSettings`, or its fields as
            keywords. ``tool_budgets={"search": 50_000, "*": 1_000}`` gates tools.
        model_name: the model to price by when it cannot be read from the agent (e.g. a
            ``RunConfig(model=...)`` override, which hooks cannot see).
        llm: gate model calls (default). Pass ``llm=False`` when the agents' models are already
            :class:`~runcycles_openai_agents.CyclesModel` and you only want tool budgets
            (agents whose model is a ``CyclesModel`` are skipped automatically).
    """

    def __init__(
        self,
        settings: CyclesSettings | None = None,
        *,
        model_name: str | None = None,
        provider: str | None = None,
        llm: bool = True,
        **settings_kwargs: Any,
    ) -> None:
        self.settings = resolve_settings(
            settings, settings_kwargs, denial_error=BudgetExceededError
        )
        self.model_name = model_name
        self.provider = provider
        self.llm = llm
        self._open: dict[Hashable, list[tuple[AsyncGuard, ModelCall | None]]] = {}
        self._lock = threading.Lock()
        # The model call behind each open model guard, to settle leftovers by the kit's rule.
        self._calls: dict[int, ModelCall] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def _push(self, key: Hashable, guard: AsyncGuard, call: ModelCall | None) -> None:
        with self._lock:
            self._open.setdefault(key, []).append((guard, call))
            if call is not None:
                self._calls[id(guard)] = call
        ledger = _ledger.get()
        if ledger is not None:
            ledger.append(guard)

    def _pop(self, key: Hashable) -> tuple[AsyncGuard, ModelCall | None] | None:
        with self._lock:
            entries = self._open.get(key)
            if not entries:
                return None
            entry = entries.pop(0)
            self._calls.pop(id(entry[0]), None)
            if not entries:
                del self._open[key]
            return entry

    def _forget(self, guards: list[AsyncGuard]) -> None:
        ids = {id(g) for g in guards}
        with self._lock:
            for key in list(self._open):
                kept = [e for e in self._open[key] if id(e[0]) not in ids]
                if kept:
                    self._open[key] = kept
                else:
                    del self._open[key]

    @property
    def pending(self) -> int:
        """Reservations taken by these hooks and not yet settled."""
        with self._lock:
            return sum(len(v) for v in self._open.values())

    # -- model calls ---------------------------------------------------------------------------
    def _model_of(self, agent: Agent[Any]) -> tuple[str, str | None]:
        if self.model_name:
            return self.model_name, self.provider
        model = agent.model
        if isinstance(model, str):
            return model, self.provider
        if model is not None:
            name = discover_model_name(model)
            if name:
                return name, self.provider or _provider_of(model)
        return get_default_model(), self.provider

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        if not self.llm or isinstance(agent.model, CyclesModel):
            return
        name, provider = self._model_of(agent)
        scope = current_scope()
        call = ModelCall(
            model=name,
            provider=provider,
            messages=request_messages(system_prompt, input_items),
            max_output_tokens=agent.model_settings.max_tokens,
            idempotency_key=scope.model_key(),
            subject=scope.subject,
            dimensions=scope.dimensions,
            metadata=scope.metadata,
        )
        guard = await areserve_uncancellable(areserve_model_step(self.settings, call))
        if guard is None:  # a replay of a step an earlier attempt already paid for
            return
        self._push(("llm", id(context)), guard, call)

    async def on_llm_end(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        response: ModelResponse,
    ) -> None:
        entry = self._pop(("llm", id(context)))
        if entry is None:
            return
        guard, call = entry
        if call is None:
            return
        received = received_output(response.output)
        await asettle_model_call(
            guard, self.settings, call, received=received, usage=to_usage(response.usage)
        )

    # -- tool calls ----------------------------------------------------------------------------
    @staticmethod
    def _tool_key(context: RunContextWrapper[Any], tool: Tool) -> Hashable:
        call_id = getattr(context, "tool_call_id", None)
        return ("tool", call_id) if call_id else ("tool", id(context), tool.name)

    async def on_tool_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool
    ) -> None:
        scope = current_scope()
        guard = await areserve_uncancellable(
            areserve_tool_step(
                self.settings,
                tool.name,
                idempotency_key=scope.tool_key(getattr(context, "tool_call_id", None)),
                subject=scope.subject,
            )
        )
        if guard is None:  # not budgeted, or a replayed call already paid for
            return
        self._push(self._tool_key(context, tool), guard, None)

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: object
    ) -> None:
        entry = self._pop(self._tool_key(context, tool))
        if entry is not None:
            guard = entry[0]
            guard.mark_ran()
            await uncancellable(guard.commit())

    # -- cleanup -------------------------------------------------------------------------------
    async def _settle(self, guards: list[AsyncGuard], exc: BaseException | None) -> None:
        with self._lock:
            calls = {id(g): self._calls.pop(id(g), None) for g in guards}
        self._forget(guards)
        # A run that ended without an end hook: no output was seen here, so a failed run is
        # released and a cancelled or stopped one pays its prompt (the kit's rule).
        error = exc or RuntimeError("run ended before the call was settled")
        for guard in guards:
            if guard.state in _SETTLED:
                continue
            call = calls.get(id(guard))
            if call is not None:
                await asettle_model_call(guard, self.settings, call, error=error)
            else:
                await uncancellable(guard.finish(error))

    async def release_pending(self) -> int:
        """Settle every reservation these hooks still hold (released unless the call ran), for
        all runs; returns how many there were. Call it after ``Runner.run`` raised."""
        with self._lock:
            guards = [g for entries in self._open.values() for g, _ in entries]
        await self._settle(guards, None)
        return len(guards)

    async def run(self, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> RunResult:
        """``Runner.run(starting_agent, input, hooks=self, **kwargs)`` that settles this run's
        leftover reservations however it ends, and re-raises a tool denial the SDK wrapped in a
        ``UserError`` as the denial itself."""
        ledger: list[AsyncGuard] = []
        token = _ledger.set(ledger)
        error: BaseException | None = None
        try:
            return await Runner.run(starting_agent, input, hooks=self, **kwargs)
        except UserError as exc:
            error = exc
            if isinstance(exc.__cause__, CoreBudgetExceededError):
                raise exc.__cause__ from exc
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            _ledger.reset(token)
            await uncancellable(self._settle(ledger, error))

    def run_streamed(
        self, starting_agent: Agent[Any], input: Any, **kwargs: Any
    ) -> CyclesRunResultStreaming:
        """``Runner.run_streamed(starting_agent, input, hooks=self, **kwargs)`` whose
        :meth:`~CyclesRunResultStreaming.stream_events` settles this run's leftover
        reservations when the stream ends: consumed, failed, cancelled or abandoned."""
        ledger: list[AsyncGuard] = []
        # The run's background task copies the context here, ledger included.
        token = _ledger.set(ledger)
        try:
            result = Runner.run_streamed(starting_agent, input, hooks=self, **kwargs)
        finally:
            _ledger.reset(token)
        return CyclesRunResultStreaming(result, self, ledger)


class CyclesRunResultStreaming:
    """A ``RunResultStreaming`` (every attribute is the SDK result's) whose event stream
    settles the run's leftover reservations when it ends."""

    def __init__(
        self, result: RunResultStreaming, hooks: CyclesRunHooks, ledger: list[AsyncGuard]
    ) -> None:
        self.result = result
        self._hooks = hooks
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)

    async def stream_events(self) -> AsyncGenerator[StreamEvent, None]:
        """The SDK's ``stream_events()``; once it ends, the run's task is awaited and any hold it
        left (a failed or abandoned model call) is released, a hook-denied tool too."""
        error: BaseException | None = None
        try:
            async for event in self.result.stream_events():
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            await uncancellable(self._settle_after_run(error))

    async def _settle_after_run(self, error: BaseException | None) -> None:
        task = self.result.run_loop_task
        if task is not None and not task.done():
            if error is not None or not self.result.is_complete:
                self.result.cancel()
            await asyncio.wait({task})
        await self._hooks._settle(list(self._ledger), error)
