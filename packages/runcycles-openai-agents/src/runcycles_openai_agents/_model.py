"""``CyclesModel``: any ``agents`` Model, budgeted; ``CyclesModelProvider`` for string names.

Every model call (each attempt of the SDK's own retries included) is reserved before the inner
model is called, and settled in ``finally``:

- success: the response's usage is priced and committed (cache and reasoning tokens included);
- the call raised before producing anything: the hold is released;
- a stream stopped early (consumer break, ``RunResultStreaming.cancel()``, task cancellation) or
  failed after its first event: the provider has started spending, so the usage counted offline
  from the request and the output seen so far is committed;
- a call whose provider reports no usage: the same offline count is committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest, ModelRetryNormalizedError
from agents.tool import Tool
from openai.types.responses.response_prompt_param import ResponsePromptParam

from runcycles_core import BudgetExceededError as CoreBudgetExceededError
from runcycles_core.lifecycle import AsyncGuard, GuardState
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    acommit_usage,
    areserve_model_step,
)
from runcycles_core.pricing import Usage

from ._scope import RunScope, current_scope
from ._settings import resolve_settings
from ._usage import counted_usage, request_messages, to_usage

__all__ = ["CyclesModel", "CyclesModelProvider", "discover_model_name"]

_SETTLED = (GuardState.COMMITTED, GuardState.RELEASED, GuardState.DENIED)
T = TypeVar("T")


def discover_model_name(model: object) -> str | None:
    """The model name an ``agents`` Model exposes (``.model`` on the OpenAI Responses and Chat
    Completions models and on LiteLLM / any-llm adapters), or None."""
    name = getattr(model, "model", None)
    return name if isinstance(name, str) and name else None


def _provider_of(model: object) -> str | None:
    # The SDK's own OpenAI models only ever call OpenAI (or an endpoint priced like it).
    return "openai" if type(model).__module__.startswith("agents.models.openai") else None


async def uncancellable(operation: Awaitable[T]) -> T:
    """Run a settlement step to completion even if the caller is cancelled meanwhile.

    ``AsyncGuard.commit`` / ``release`` first claim the terminal state and then await; a
    cancellation landing between the two would leave the hold on the server until its TTL. In
    its own task the step always finishes; the caller still sees its cancellation.
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


async def reserve_step(reserve: Awaitable[AsyncGuard | None]) -> AsyncGuard | None:
    """Await a step reservation (None: an earlier attempt of this step already paid); if the
    caller is cancelled meanwhile, the request still completes (the server may already hold
    the estimate) and the hold is returned."""
    task = asyncio.ensure_future(reserve)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:
            guard = task.result()
            if guard is not None:
                await uncancellable(guard.release("cancelled_while_reserving"))
        raise


class CyclesModel(Model):
    """Wrap ``inner`` so every call reserves budget first and commits its priced usage.

    Args:
        inner: any ``agents`` Model (``OpenAIResponsesModel``, ``LitellmModel``, a test model…).
        settings: a :class:`~runcycles_core.plugin.CyclesSettings`; or pass its fields as
            keywords (``client=``, ``tenant=`` … ``toolset=``, ``estimate=``, ``shadow=``,
            ``outage_policy=``…).
        model_name: the name to price calls by; needed when ``inner`` does not expose one.
        provider: the provider to price by (default: ``openai`` for the SDK's OpenAI models).

    Denials raise :class:`~runcycles_openai_agents.BudgetExceededError` before ``inner`` is
    called; the SDK lets it out of ``Runner.run`` unchanged and never retries it.
    """

    def __init__(
        self,
        inner: Model,
        settings: CyclesSettings | None = None,
        *,
        model_name: str | None = None,
        provider: str | None = None,
        **settings_kwargs: Any,
    ) -> None:
        name = model_name or discover_model_name(inner)
        if name is None:
            raise ValueError(
                f"cannot tell which model {type(inner).__name__} calls; pass model_name= "
                "so its calls can be priced"
            )
        self.inner = inner
        self.model_name = name
        self.provider = provider or _provider_of(inner)
        self.settings = resolve_settings(settings, settings_kwargs)

    @property
    def model(self) -> str:
        """The priced model name (mirrors ``.model`` of the SDK's own models)."""
        return self.model_name

    def __repr__(self) -> str:
        return f"CyclesModel({self.inner!r}, model_name={self.model_name!r})"

    # -- guard ---------------------------------------------------------------------------------
    def _reserve(
        self,
        scope: RunScope,
        key: str,
        messages: list[Any],
        model_settings: ModelSettings,
    ) -> Awaitable[AsyncGuard | None]:
        call = ModelCall(
            model=self.model_name,
            provider=self.provider,
            messages=messages,
            max_output_tokens=model_settings.max_tokens,
            idempotency_key=key,
            subject=scope.subject,
            dimensions=scope.dimensions,
            metadata=scope.metadata,
        )
        return reserve_step(areserve_model_step(self.settings, call))

    @staticmethod
    def _capped(guard: AsyncGuard, model_settings: ModelSettings) -> ModelSettings:
        # A server cap on output tokens (caps.max_tokens) is applied to the request.
        capped = guard.clamp_max_tokens(model_settings.max_tokens)
        if capped is None or capped == model_settings.max_tokens:
            return model_settings
        return dataclasses.replace(model_settings, max_tokens=capped)

    async def _commit(self, guard: AsyncGuard, usage: Usage) -> None:
        await uncancellable(
            acommit_usage(guard, self.settings, self.model_name, usage, provider=self.provider)
        )

    async def _settle_unreported(
        self, guard: AsyncGuard, messages: list[Any], output: list[Any], reason: str
    ) -> None:
        if guard.state in _SETTLED:
            return
        if guard.ran:
            await self._commit(guard, counted_usage(self.settings.prices, messages, output))
        else:
            await uncancellable(guard.release(reason))

    # -- Model interface -----------------------------------------------------------------------
    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        scope = current_scope()
        key = scope.model_key(input)
        messages = request_messages(system_instructions, input, tools)
        guard = await self._reserve(scope, key, messages, model_settings)
        if guard is None:  # a replay of a step an earlier attempt already paid for
            return await self.inner.get_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                prompt=prompt,
            )
        try:
            response = await self.inner.get_response(
                system_instructions,
                input,
                self._capped(guard, model_settings),
                tools,
                output_schema,
                handoffs,
                tracing,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                prompt=prompt,
            )
        except BaseException as exc:
            scope.call_failed(input)
            await uncancellable(guard.release(f"model_call_failed: {type(exc).__name__}"))
            raise
        guard.mark_ran()
        usage = to_usage(response.usage)
        if usage is None:
            usage = counted_usage(self.settings.prices, messages, list(response.output))
        await self._commit(guard, usage)
        return response

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        scope = current_scope()
        key = scope.model_key(input)
        messages = request_messages(system_instructions, input, tools)
        guard = await self._reserve(scope, key, messages, model_settings)
        if guard is None:  # a replay of a step an earlier attempt already paid for
            async for event in self.inner.stream_response(
                system_instructions,
                input,
                model_settings,
                tools,
                output_schema,
                handoffs,
                tracing,
                previous_response_id=previous_response_id,
                conversation_id=conversation_id,
                prompt=prompt,
            ):
                yield event
            return
        seen: list[Any] = []
        reason = "stream_closed_before_first_event"
        stream = self.inner.stream_response(
            system_instructions,
            input,
            self._capped(guard, model_settings),
            tools,
            output_schema,
            handoffs,
            tracing,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            prompt=prompt,
        )
        try:
            async for event in stream:
                guard.mark_ran()
                if getattr(event, "type", None) == "response.completed":
                    usage = to_usage(getattr(getattr(event, "response", None), "usage", None))
                    if usage is not None:
                        await self._commit(guard, usage)
                else:
                    delta = getattr(event, "delta", None)
                    if isinstance(delta, str):
                        seen.append(delta)
                yield event
        except BaseException as exc:
            if not guard.ran:
                scope.call_failed(input)
            reason = f"model_call_failed: {type(exc).__name__}"
            raise
        finally:
            try:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                await self._settle_unreported(guard, messages, seen, reason)

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        """A denial is never worth retrying (it is final until budget is added); anything else
        is the inner model's call."""
        error = request.error
        if isinstance(error, CoreBudgetExceededError):
            return ModelRetryAdvice(
                suggested=False,
                reason=f"budget denied: {error.error_code}",
                normalized=ModelRetryNormalizedError(
                    status_code=error.status, error_code=error.error_code, is_abort=True
                ),
            )
        return self.inner.get_retry_advice(request)

    async def close(self) -> None:
        await self.inner.close()

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.inner._cleanup_on_run_end(owner)


class CyclesModelProvider(ModelProvider):
    """Wrap a ModelProvider so every model it returns is a :class:`CyclesModel`.

    Use it for agents configured by model name: ``RunConfig(model_provider=
    CyclesModelProvider(client=...))``. ``inner`` defaults to the SDK's ``MultiProvider``.
    """

    def __init__(
        self,
        inner: ModelProvider | None = None,
        settings: CyclesSettings | None = None,
        **settings_kwargs: Any,
    ) -> None:
        if inner is None:
            from agents.models.multi_provider import MultiProvider

            inner = MultiProvider()
        self.inner = inner
        self.settings = resolve_settings(settings, settings_kwargs)

    def get_model(self, model_name: str | None) -> Model:
        model = self.inner.get_model(model_name)
        if isinstance(model, CyclesModel):
            return model
        name = discover_model_name(model) or model_name
        if name is None:
            from agents.models import get_default_model

            name = get_default_model()
        return CyclesModel(model, self.settings, model_name=name)

    async def aclose(self) -> None:
        await self.inner.aclose()
