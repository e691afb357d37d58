"""``CyclesModel``: any ``agents`` Model, budgeted; ``CyclesModelProvider`` for string names.

Every model call (each attempt of the SDK's own retries included) is reserved before the inner
model is called, and settled in ``finally`` by the plugin kit's one rule
(:mod:`runcycles_core.plugin`): reported usage is priced; a call without usage, a stream
stopped early (consumer break, ``RunResultStreaming.cancel()``, task cancellation), a cancelled
call and a call that failed after partial output commit the prompt plus the output received,
counted offline; a call that raised before any output is released.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest, ModelRetryNormalizedError
from agents.tool import Tool
from openai.types.responses.response_prompt_param import ResponsePromptParam

from runcycles_core import BudgetExceededError as CoreBudgetExceededError
from runcycles_core.lifecycle import AsyncGuard
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    areserve_model_step,
    areserve_uncancellable,
    asettle_model_call,
    resolve_settings,
)
from runcycles_core.pricing import Usage

from ._errors import BudgetExceededError
from ._scope import RunScope, current_scope
from ._usage import received_output, request_messages, to_usage

__all__ = ["CyclesModel", "CyclesModelProvider", "discover_model_name"]


def discover_model_name(model: object) -> str | None:
    """The model name an ``agents`` Model exposes (``.model`` on the OpenAI Responses and Chat
    Completions models and on LiteLLM / any-llm adapters), or None."""
    name = getattr(model, "model", None)
    return name if isinstance(name, str) and name else None


def _provider_of(model: object) -> str | None:
    # The SDK's own OpenAI models only ever call OpenAI (or an endpoint priced like it).
    return "openai" if type(model).__module__.startswith("agents.models.openai") else None


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
        self.settings = resolve_settings(
            settings, settings_kwargs, denial_error=BudgetExceededError
        )

    @property
    def model(self) -> str:
        """The priced model name (mirrors ``.model`` of the SDK's own models)."""
        return self.model_name

    def __repr__(self) -> str:
        return f"CyclesModel({self.inner!r}, model_name={self.model_name!r})"

    # -- guard ---------------------------------------------------------------------------------
    def _call(
        self, scope: RunScope, key: str, messages: list[Any], model_settings: ModelSettings
    ) -> ModelCall:
        return ModelCall(
            model=self.model_name,
            provider=self.provider,
            messages=messages,
            max_output_tokens=model_settings.max_tokens,
            idempotency_key=key,
            subject=scope.subject,
            dimensions=scope.dimensions,
            metadata=scope.metadata,
        )

    async def _reserve(self, call: ModelCall) -> AsyncGuard | None:
        return await areserve_uncancellable(areserve_model_step(self.settings, call))

    @staticmethod
    def _capped(guard: AsyncGuard, model_settings: ModelSettings) -> ModelSettings:
        # A server cap on output tokens (caps.max_tokens) is applied to the request.
        capped = guard.clamp_max_tokens(model_settings.max_tokens)
        if capped is None or capped == model_settings.max_tokens:
            return model_settings
        return dataclasses.replace(model_settings, max_tokens=capped)

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
        call = self._call(
            scope, key, request_messages(system_instructions, input, tools), model_settings
        )
        guard = await self._reserve(call)
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
            await asettle_model_call(guard, self.settings, call, error=exc)
            raise
        received = received_output(response.output)
        await asettle_model_call(
            guard, self.settings, call, received=received, usage=to_usage(response.usage)
        )
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
        call = self._call(
            scope, key, request_messages(system_instructions, input, tools), model_settings
        )
        guard = await self._reserve(call)
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
        received = Received()
        usage: Usage | None = None
        error: BaseException | None = None
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
                if getattr(event, "type", None) == "response.completed":
                    usage = to_usage(getattr(getattr(event, "response", None), "usage", None))
                    if usage is not None:
                        await asettle_model_call(
                            guard, self.settings, call, received=received, usage=usage
                        )
                else:
                    delta = getattr(event, "delta", None)
                    if isinstance(delta, str):
                        received.add(delta)
                yield event
        except BaseException as exc:
            if not received:
                scope.call_failed(input)
            error = exc
            raise
        finally:
            try:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                await asettle_model_call(
                    guard, self.settings, call, received=received, usage=usage, error=error
                )

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
        self.settings = resolve_settings(
            settings, settings_kwargs, denial_error=BudgetExceededError
        )

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
