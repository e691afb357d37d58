"""``CyclesCapability``: budget enforcement for every model request and tool call of an agent."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.tools import ToolDefinition

from runcycles_core.lifecycle import AsyncGuard, GuardState
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    amodel_guard,
    areserve_uncancellable,
    asettle_model_call,
    atool_guard,
    resolve_settings,
    uncancellable,
)

from ._errors import BudgetExceededError
from ._mapping import (
    INCOMPLETE_STATES,
    message_dicts,
    price_provider,
    received_of,
    response_usage,
)
from ._scope import run_scope
from ._stream import CountingModel

__all__ = ["CyclesCapability"]

_SETTLED = (GuardState.COMMITTED, GuardState.RELEASED, GuardState.DENIED, GuardState.ABANDONED)
# How long (x 10 ms) a cut-short call waits for its run to report why before it is settled as
# cancelled.
_UNREPORTED_POLLS = 200


#: Whether this Pydantic AI runs ``prepare_model_request`` before each attempt (2.64 and later):
#: then every attempt, a fallback model's included, is its own reservation.
PER_ATTEMPT = hasattr(AbstractCapability, "prepare_model_request")


class _AttemptFailed(Exception):
    """An attempt that ended in an error another attempt recovered from (not billed)."""


@dataclass(eq=False)
class _Open:
    """A model call in flight: its guard, and how many messages its run had when it started."""

    guard: AsyncGuard
    call: ModelCall
    history: int
    settings: CyclesSettings
    # The chunks its stream delivered (counted by CountingModel, 2.63 and later).
    streamed: Received = field(default_factory=Received)


@dataclass(eq=False)
class _Step:
    """One request step (``wrap_model_request``): its open attempt and that attempt's response."""

    settings: CyclesSettings
    run: str
    attempt: _Open | None = None
    response: ModelResponse | None = None


_STEP: ContextVar[_Step | None] = ContextVar("runcycles_pydantic_ai_step", default=None)


class CyclesCapability(AbstractCapability[Any]):
    """Reserve before every model request, commit its priced usage after, release on failure;
    gate tool calls as action kind ``tool.<name>``.

    Pass it to ``Agent(..., capabilities=[CyclesCapability()])`` (or to one run's
    ``capabilities=``). It covers ``run``, ``run_sync``, ``run_stream``, ``run_stream_events``
    and ``iter``: Pydantic AI calls ``wrap_model_request`` around every model request, streamed
    or not, and lets an exception raised there end the run unchanged, so a denial
    (:class:`~runcycles_pydantic_ai.BudgetExceededError`) stops the run before the model is
    called.

    - Model request: reserve the estimate priced from the serving model and the messages (or
      ``estimate=``), call the model, then settle by the plugin kit's one rule
      (``runcycles_core.plugin``): the priced ``response.usage`` (cache reads and writes,
      reasoning) when the provider reported it, priced as ``response.model_name`` /
      ``provider_name``; otherwise (``unmeasured_requests``, no tokens, a stream the consumer
      stopped, a cancelled call, a stream that raised after output) the prompt plus the output
      received, counted offline. A call that raised before any output is released.
    - Tool call (``wrap_tool_execute``): a tool with an entry in ``tool_budgets`` (or ``"*"``)
      reserves that estimate as ``tool.<name>`` before it runs and commits after (released if it
      raises); a denial ends the run without running the tool.

    Per-run subject levels and dimensions come from the run's ``metadata`` (see
    :func:`~runcycles_pydantic_ai.cycles_metadata`).

    Args:
        settings: a :class:`CyclesSettings`; or pass its fields as keyword arguments
            (``client=``, ``tenant=``, ``agent=``, ``estimate=``, ``tool_budgets=``…).
        model: the model name to price, overriding what the model reports.
        provider: the genai-prices provider id, overriding the model's ``system``.
    """

    def __init__(
        self,
        settings: CyclesSettings | None = None,
        *,
        model: str | None = None,
        provider: str | None = None,
        **fields: Any,
    ) -> None:
        self.settings = resolve_settings(settings, fields, denial_error=BudgetExceededError)
        self.model = model
        self.provider = provider
        # run_sync() runs each thread's runs on that thread's own event loop, and an async client
        # serves one loop: runs on another loop than the first get a copy of the settings that
        # derives its own async client from the same sync client.
        self._home: asyncio.AbstractEventLoop | None = None
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CyclesSettings] = (
            weakref.WeakKeyDictionary()
        )
        self._loop_lock = threading.Lock()
        # Per run id: the model calls in flight (settled by on_run_error if the run fails).
        self._open: dict[str, list[_Open]] = {}
        self._later: set[asyncio.Future[None]] = set()

    # -- model requests ------------------------------------------------------------------------
    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: Any,
    ) -> ModelResponse:
        step = _Step(self._here(), ctx.run_id or "")
        if not PER_ATTEMPT:
            # Before 2.64 a request step is one attempt: reserve for it here.
            await self._reserve(ctx, step, request_context)
        token = _STEP.set(step)
        try:
            response: ModelResponse = await handler(request_context)
        except asyncio.CancelledError:
            # A cancelled run, or a stream that broke: Pydantic AI hands a stream's error to its
            # consumer and cancels this hook. Either way the run reports the real cause to
            # on_run_error (before the caller sees it), which settles the call; a cut-short
            # call the run never reports is settled as cancelled shortly after.
            if step.attempt is not None:
                later = asyncio.ensure_future(self._settle_unreported(ctx, step.attempt))
                self._later.add(later)
            raise
        except BaseException as exc:
            # Raised before a response: released. A response a later hook rejected (a
            # ModelRetry from after_model_request) was billed: its usage is committed.
            await self._settle_attempt(step, error=exc)
            raise
        finally:
            _STEP.reset(token)
        step.response = response
        await self._settle_attempt(step)
        return response

    async def prepare_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        """From 2.64, before each attempt at a request (a ``ModelFallback`` retries on another
        model): settle the attempt before it, then reserve for the model about to serve."""
        step = _STEP.get()
        if step is None:  # pragma: no cover - only runs inside our own wrap_model_request
            return request_context
        # The attempt before this one failed (released) or had its response rejected (billed).
        await self._settle_attempt(step, error=None if step.response else _AttemptFailed())
        await self._reserve(ctx, step, request_context)
        return request_context

    async def after_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        response: ModelResponse,
    ) -> ModelResponse:
        step = _STEP.get()
        if step is not None:
            step.response = response  # settled when the attempt ends
        return response

    def get_wrapper_model(self, model: Any) -> Any:
        """From 2.63, for each attempt (after ``prepare_model_request``): wrap the serving model
        so that its stream's chunks are counted for the attempt's reservation."""
        step = _STEP.get()
        if step is None or step.attempt is None:
            return None
        return CountingModel(model, step.attempt.streamed)

    async def _reserve(
        self, ctx: RunContext[Any], step: _Step, request_context: ModelRequestContext
    ) -> None:
        call = self._call(ctx, request_context)
        guard = await areserve_uncancellable(amodel_guard(step.settings, call).reserve())
        assert guard is not None
        step.attempt = _Open(guard, call, len(ctx.messages), step.settings)
        step.response = None
        self._open.setdefault(step.run, []).append(step.attempt)

    async def _settle_attempt(self, step: _Step, *, error: BaseException | None = None) -> None:
        item, response = step.attempt, step.response
        step.attempt, step.response = None, None
        if item is None:
            return
        self._forget(step.run, item)
        if response is None:
            await asettle_model_call(
                item.guard, item.settings, item.call, received=item.streamed, error=error
            )
            return
        # A stream the consumer stopped (2.x; older versions drain it to the end).
        stopped = getattr(response, "state", "complete") in INCOMPLETE_STATES
        await asettle_model_call(
            item.guard,
            item.settings,
            self._priced_as(item.call, response),
            received=item.streamed if item.streamed else received_of(response),
            usage=response_usage(response),
            error=GeneratorExit() if stopped else None,
            model_version=response.model_name,
        )

    async def on_run_error(self, ctx: RunContext[Any], *, error: BaseException) -> Any:
        # Called (and awaited) before the caller sees the run's error: settle what the run left
        # in flight with the real cause, and with what a broken stream delivered before it broke
        # (the partial response the run recorded).
        for item in self._open.pop(ctx.run_id or "", []):
            received = item.streamed
            if not received:
                for message in ctx.messages[item.history :]:
                    if isinstance(message, ModelResponse):
                        received_of(message, received)
            await asettle_model_call(
                item.guard, item.settings, item.call, received=received, error=error
            )
        raise error

    async def _settle_unreported(self, ctx: RunContext[Any], item: _Open) -> None:
        try:
            for _ in range(_UNREPORTED_POLLS):
                if item.guard.state in _SETTLED:
                    return
                await asyncio.sleep(0.01)
            self._forget(ctx.run_id or "", item)
            await asettle_model_call(
                item.guard,
                item.settings,
                item.call,
                received=item.streamed,
                error=asyncio.CancelledError(),
            )
        finally:
            self._later.discard(asyncio.current_task())  # type: ignore[arg-type, unused-ignore]

    def _forget(self, key: str, item: _Open) -> None:
        calls = self._open.get(key)
        if calls is not None and item in calls:
            calls.remove(item)
            if not calls:
                self._open.pop(key, None)

    # -- tools ---------------------------------------------------------------------------------
    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: Any,
        handler: Any,
    ) -> Any:
        subject, _ = run_scope(ctx)
        guard = atool_guard(self._here(), call.tool_name, subject=subject)
        if guard is None:
            return await handler(args)
        await areserve_uncancellable(guard.reserve())
        try:
            result = await handler(args)
        except BaseException as exc:
            await uncancellable(guard.finish(exc))
            raise
        await uncancellable(guard.commit())
        return result

    # -- implementation ------------------------------------------------------------------------
    def _here(self) -> CyclesSettings:
        """The settings for the running event loop (see ``__init__``)."""
        loop = asyncio.get_running_loop()
        with self._loop_lock:
            if self._home is None or self._home is loop or self.settings.client is None:
                self._home = self._home or loop
                return self.settings
            found = self._per_loop.get(loop)
            if found is None:
                found = self._per_loop[loop] = dataclasses.replace(self.settings, _derived={})
            return found

    def _call(self, ctx: RunContext[Any], request_context: ModelRequestContext) -> ModelCall:
        # ModelRequestContext.model (the serving model) exists from 1.73; before, the run's.
        serving = getattr(request_context, "model", None) or ctx.model
        if isinstance(serving, FallbackModel):
            # A FallbackModel tries its models inside one attempt: estimate for the first; the
            # commit prices the model that answered (response.model_name).
            serving = serving.models[0]
        subject, dimensions = run_scope(ctx)
        settings = request_context.model_settings or {}
        max_tokens = settings.get("max_tokens") if isinstance(settings, Mapping) else None
        return ModelCall(
            model=self.model or serving.model_name,
            provider=self.provider or price_provider(serving.system),
            messages=message_dicts(request_context.messages),
            max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
            subject=subject,
            dimensions=dimensions,
            metadata={"framework": "pydantic-ai"},
        )

    def _priced_as(self, call: ModelCall, response: ModelResponse) -> ModelCall:
        """The call as the response names it: the model (and provider) that served it."""
        model = self.model or response.model_name or call.model
        provider = self.provider or price_provider(response.provider_name) or call.provider
        if (model, provider) == (call.model, call.provider):
            return call
        return dataclasses.replace(call, model=model, provider=provider)
