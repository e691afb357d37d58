"""``CyclesMiddleware``: budget enforcement for LangChain v1 ``create_agent`` agents."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.messages import BaseMessage
from langchain_core.runnables.config import var_child_runnable_config

from runcycles_core.lifecycle import AsyncGuard
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    areserve_model_step,
    areserve_tool_step,
    areserve_uncancellable,
    asettle_model_call,
    reserve_model_step,
    reserve_tool_step,
    resolve_settings,
    settle_model_call,
)

from ._errors import BudgetExceededError
from ._handler import _as_dicts
from ._mapping import (
    StepKeys,
    add_token,
    max_tokens,
    messages_usage,
    pricing_provider,
    received_from_messages,
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


class _Tokens(BaseCallbackHandler):
    """Records what a model call streams: ``wrap_model_call`` only sees the final message, so
    a stream stopped early or broken would otherwise look like one that produced nothing."""

    run_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.received = Received()

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, **kwargs: Any) -> None:
        add_token(self.received, token, chunk)


@contextlib.contextmanager
def _watching(tokens: _Tokens) -> Iterator[None]:
    # The agent invokes the model with the node's config from this context variable; adding
    # the recorder there makes the model's own run report its tokens to it (the model call
    # only, not what the caller configured).
    config = var_child_runnable_config.get()
    if config is None:
        yield
        return
    callbacks = config.get("callbacks")
    if isinstance(callbacks, BaseCallbackManager):
        callbacks = callbacks.copy()
        callbacks.add_handler(tokens, inherit=False)
    else:
        callbacks = [*(callbacks or []), tokens]
    token = var_child_runnable_config.set({**config, "callbacks": callbacks})
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


def _received(tokens: _Tokens, messages: list[BaseMessage]) -> Received:
    return tokens.received if tokens.received else received_from_messages(messages)


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
    ``usage_metadata``, and otherwise settle by the plugin kit's one rule
    (:mod:`runcycles_core.plugin`: no usage, a cancelled call or an early-stopped stream pay
    the prompt plus the output seen, counted offline; a provider error releases);
    ``wrap_tool_call`` / ``awrap_tool_call`` gate tools as ``tool.<name>`` when
    ``tool_budgets`` is configured. A denial raises
    :class:`~runcycles_langchain.BudgetExceededError` out of ``invoke``: the agent stops
    instead of pretending to answer. The async variants use the async client, so nothing
    blocks the event loop.

    Keys are stable across LangGraph retries and resumes (thread id + checkpoint namespace +
    task, see :class:`~runcycles_langchain._mapping.StepKeys`). Per-run subject overrides come
    from the run metadata (``cycles_agent``…, ``cycles_dimensions``).

    Use it *instead of* :class:`~runcycles_langchain.CyclesCallbackHandler` on the same agent,
    not with it: both would reserve for the same call.
    """

    def __init__(self, settings: CyclesSettings | None = None, **fields: Any) -> None:
        super().__init__()
        self.settings = resolve_settings(settings, fields, denial_error=BudgetExceededError)
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

    # -- model calls -----------------------------------------------------------------------------
    def wrap_model_call(self, request: Any, handler: Handler) -> Any:
        call = self._model_call(request)
        guard = reserve_model_step(self.settings, call)
        if guard is None:  # an earlier attempt of this step already paid for this call
            return handler(request)
        tokens = _Tokens()
        try:
            with _watching(tokens):
                response = handler(request)
        except BaseException as exc:
            settle_model_call(guard, self.settings, call, received=tokens.received, error=exc)
            raise
        messages = _result_messages(response)
        settle_model_call(
            guard,
            self.settings,
            call,
            received=_received(tokens, messages),
            usage=messages_usage(messages),
        )
        return response

    async def awrap_model_call(self, request: Any, handler: AsyncHandler) -> Any:
        call = self._model_call(request)
        guard = await areserve_uncancellable(areserve_model_step(self.settings, call))
        if guard is None:
            return await handler(request)
        tokens = _Tokens()
        try:
            with _watching(tokens):
                response = await handler(request)
        except BaseException as exc:
            await asettle_model_call(
                guard, self.settings, call, received=tokens.received, error=exc
            )
            raise
        messages = _result_messages(response)
        await asettle_model_call(
            guard,
            self.settings,
            call,
            received=_received(tokens, messages),
            usage=messages_usage(messages),
        )
        return response

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
