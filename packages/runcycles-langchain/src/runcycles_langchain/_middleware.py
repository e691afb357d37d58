"""``CyclesMiddleware``: budget enforcement for LangChain v1 ``create_agent`` agents."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import BaseMessage

from runcycles_core.lifecycle import AsyncGuard, Guard
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    acommit_usage,
    areserve_model_step,
    areserve_tool_step,
    commit_usage,
    reserve_model_step,
    reserve_tool_step,
)
from runcycles_core.pricing import Usage

from ._handler import _as_dicts
from ._mapping import (
    StepKeys,
    max_tokens,
    messages_usage,
    plugin_settings,
    pricing_provider,
    run_overrides,
)

__all__ = ["CyclesMiddleware"]

Handler = Callable[[Any], Any]
AsyncHandler = Callable[[Any], Awaitable[Any]]


def _run_config() -> Mapping[str, Any]:
    # The agent's node config carries the run metadata (thread id, checkpoint namespace, the
    # user's cycles_* overrides); outside a graph there is none.
    try:
        from langgraph.config import get_config

        return get_config()
    except RuntimeError:
        return {}


def _attempt(config: Mapping[str, Any]) -> str | None:
    # Each attempt of a task runs under a fresh node run, the parent of everything inside it.
    parent = getattr(config.get("callbacks"), "parent_run_id", None)
    return str(parent) if parent is not None else None


def _abandoned(exc: BaseException) -> bool:
    # Cancellation or an early-stopped stream: the request was already sent and the provider
    # bills what it generated, which the middleware cannot see, so the estimate is committed.
    # A provider error (an Exception) releases instead.
    return not isinstance(exc, Exception)


def _result_messages(response: Any) -> list[BaseMessage]:
    inner = getattr(response, "model_response", response)  # ExtendedModelResponse
    if isinstance(inner, BaseMessage):
        return [inner]
    result = getattr(inner, "result", None) or []
    return [m for m in result if isinstance(m, BaseMessage)]


class CyclesMiddleware(AgentMiddleware):
    """``create_agent(model, tools, middleware=[CyclesMiddleware(...)])``.

    ``wrap_model_call`` / ``awrap_model_call`` reserve before each model call (priced from the
    request's model and messages, or ``estimate=``), commit the response's priced
    ``usage_metadata`` and release when the call raises (a cancelled call or an early-stopped
    stream commits the estimate: the provider already bills it); ``wrap_tool_call`` /
    ``awrap_tool_call`` gate tools as ``tool.<name>`` when ``tool_budgets`` is configured. A
    denial raises :class:`~runcycles_langchain.BudgetExceededError` out of ``invoke``: the
    agent stops instead of pretending to answer. The async variants use the async client, so
    nothing blocks the event loop.

    Keys are stable across LangGraph retries and resumes (thread id + checkpoint namespace +
    task, see :class:`~runcycles_langchain._mapping.StepKeys`). Per-run subject overrides come
    from the run metadata (``cycles_agent``…, ``cycles_dimensions``).

    Use it *instead of* :class:`~runcycles_langchain.CyclesCallbackHandler` on the same agent,
    not with it: both would reserve for the same call.
    """

    def __init__(self, settings: CyclesSettings | None = None, **fields: Any) -> None:
        super().__init__()
        self.settings = plugin_settings(settings, fields)
        self._keys = StepKeys()

    # -- mapping ---------------------------------------------------------------------------------
    def _model_call(self, request: Any) -> ModelCall:
        config = _run_config()
        metadata = config.get("metadata") or {}
        params: Mapping[str, Any] = {}
        try:
            params = request.model._get_ls_params()
        except Exception:  # a model without LangSmith params: fall back to its attributes
            params = {}
        model = params.get("ls_model_name") or getattr(request.model, "model_name", None)
        model = model or getattr(request.model, "model", None) or "unknown-model"
        messages = list(request.messages)
        system = getattr(request, "system_message", None)
        if isinstance(system, BaseMessage):
            messages.insert(0, system)
        subject, dimensions = run_overrides(metadata)
        return ModelCall(
            model=str(model),
            provider=pricing_provider(params.get("ls_provider")),
            messages=_as_dicts(messages),
            max_output_tokens=max_tokens(params, request.model_settings or {}),
            idempotency_key=self._keys.key(
                metadata, "llm", run_id=uuid.uuid4(), attempt=_attempt(config)
            ),
            subject=subject,
            dimensions=dimensions,
            metadata={"framework": "langchain-agents"},
        )

    def _tool_key(self, request: Any) -> tuple[str, str, dict[str, str] | None]:
        config = _run_config()
        metadata = config.get("metadata") or {}
        name = str(request.tool_call.get("name") or "tool")
        # Not the tool call id: models and providers do not keep those unique across runs, and
        # a collision would make a new call look already paid.
        key = self._keys.key(metadata, f"tool.{name}", attempt=_attempt(config))
        return name, key, run_overrides(metadata)[0]

    def _usage(self, response: Any) -> Usage | None:
        return messages_usage(_result_messages(response))

    # -- model calls -----------------------------------------------------------------------------
    def wrap_model_call(self, request: Any, handler: Handler) -> Any:
        call = self._model_call(request)
        guard = reserve_model_step(self.settings, call)
        if guard is None:  # an earlier attempt of this step already paid for this call
            return handler(request)
        try:
            response = handler(request)
        except BaseException as exc:
            self._failed(guard, exc)
            raise
        self._commit(guard, call, self._usage(response))
        return response

    async def awrap_model_call(self, request: Any, handler: AsyncHandler) -> Any:
        call = self._model_call(request)
        guard = await areserve_model_step(self.settings, call)
        if guard is None:
            return await handler(request)
        try:
            response = await handler(request)
        except BaseException as exc:
            if _abandoned(exc):
                guard.mark_ran()
            await guard.finish(exc)
            raise
        usage = self._usage(response)
        if usage is None:
            await guard.commit(metadata={"actual_source": "estimate", "reason": "no_usage"})
        else:
            await acommit_usage(guard, self.settings, call.model, usage, provider=call.provider)
        return response

    def _failed(self, guard: Guard, exc: BaseException) -> None:
        if _abandoned(exc):
            guard.mark_ran()
        guard.finish(exc)

    def _commit(self, guard: Guard, call: ModelCall, usage: Usage | None) -> None:
        if usage is None:
            guard.commit(metadata={"actual_source": "estimate", "reason": "no_usage"})
        else:
            commit_usage(guard, self.settings, call.model, usage, provider=call.provider)

    # -- tools -----------------------------------------------------------------------------------
    def wrap_tool_call(self, request: Any, handler: Handler) -> Any:
        name, key, subject = self._tool_key(request)
        guard = reserve_tool_step(self.settings, name, idempotency_key=key, subject=subject)
        if guard is None:
            return handler(request)
        # Commit the tool's estimate when it returns, release it when it raises.
        with guard:
            return handler(request)

    async def awrap_tool_call(self, request: Any, handler: AsyncHandler) -> Any:
        name, key, subject = self._tool_key(request)
        guard: AsyncGuard | None = await areserve_tool_step(
            self.settings, name, idempotency_key=key, subject=subject
        )
        if guard is None:
            return await handler(request)
        async with guard:
            return await handler(request)
