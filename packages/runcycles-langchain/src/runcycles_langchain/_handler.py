"""``CyclesCallbackHandler``: budget enforcement for any LangChain chat model, chain or graph."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from runcycles_core.lifecycle import Guard
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    reserve_model_step,
    reserve_tool_step,
    resolve_settings,
    settle_model_call,
)

from ._errors import BudgetExceededError
from ._mapping import (
    StepKeys,
    add_token,
    max_tokens,
    model_name,
    pricing_provider,
    result_usage,
    run_overrides,
)

__all__ = ["CyclesCallbackHandler"]


@dataclass
class _Call:
    guard: Guard
    request: ModelCall
    received: Received = field(default_factory=Received)
    task: asyncio.Task[Any] | None = None
    on_done: Callable[[asyncio.Task[Any]], object] | None = None

    def detach(self) -> None:
        if self.task is not None and self.on_done is not None:
            self.task.remove_done_callback(self.on_done)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return asyncio.current_task()


class CyclesCallbackHandler(BaseCallbackHandler):
    """Reserve before every model call, commit its priced usage after, release on failure.

    Attach it per run (``model.invoke(x, config={"callbacks": [handler]})``, which covers every
    nested model and tool of a chain, agent or graph) or per model (``Model(callbacks=[...])``).

    It is a *sync* handler with ``raise_error = True`` and ``run_inline = True``: LangChain then
    re-raises its exceptions under both ``invoke`` and ``ainvoke`` and runs it on the caller's
    thread, so a denial stops the call before the provider is contacted. (An async handler is
    silently ignored under sync ``invoke``, i.e. it would fail open.) Under ``ainvoke`` the
    reserve and commit requests block the event loop for their round trip; use
    :class:`~runcycles_langchain.CyclesMiddleware` with ``create_agent`` for fully async I/O.

    - ``on_chat_model_start`` / ``on_llm_start``: reserve (estimate priced from the model in
      ``ls_model_name`` and the prompt, or ``estimate=``), keyed by ``run_id``; a denial raises
      :class:`~runcycles_langchain.BudgetExceededError`.
    - ``on_llm_end`` / ``on_llm_error`` (and a cancelled ``agenerate``): settle by the plugin
      kit's one rule (:mod:`runcycles_core.plugin`): the priced ``usage_metadata`` (cache
      reads/writes and reasoning included); without usage, an early stop (``GeneratorExit``)
      or a cancellation, the prompt plus the output received, counted offline; a provider
      error before any output releases.
    - ``on_tool_start`` / ``on_tool_end`` / ``on_tool_error``: gate tools as ``tool.<name>``
      when ``tool_budgets`` is configured.

    Per-run subject overrides come from run metadata: ``cycles_workspace`` … ``cycles_toolset``
    and ``cycles_dimensions`` (a dict).

    Args:
        settings: a :class:`CyclesSettings`; or pass its fields as keyword arguments
            (``client=``, ``tenant=``, ``agent=``, ``tool_budgets=``…).
    """

    raise_error = True
    run_inline = True

    def __init__(self, settings: CyclesSettings | None = None, **fields: Any) -> None:
        super().__init__()
        self.settings = resolve_settings(settings, fields, denial_error=BudgetExceededError)
        self._lock = threading.Lock()
        self._calls: dict[UUID, _Call] = {}
        self._tools: dict[UUID, Guard] = {}
        self._keys = StepKeys()

    # -- LangGraph task boundaries (for stable keys) ---------------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        task = StepKeys.task(metadata)
        node = (metadata or {}).get("langgraph_node")
        # The run of the node itself starts a task attempt (a RetryPolicy retry or a resume
        # starts it again with the same task id): its calls are numbered from 0 again.
        if task is not None and node and kwargs.get("name") == node:
            self._keys.new_attempt(task)

    # -- model calls ---------------------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # One reservation covers the batch (LangChain starts one run per prompt list entry, so
        # this is a single conversation).
        flat = [m for conversation in messages for m in conversation]
        self._start(serialized, run_id, metadata, kwargs, messages=_as_dicts(flat))

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(serialized, run_id, metadata, kwargs, prompt="\n".join(prompts))

    def _start(
        self,
        serialized: Mapping[str, Any] | None,
        run_id: UUID,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
        *,
        messages: Sequence[object] | None = None,
        prompt: str | None = None,
    ) -> None:
        params = kwargs.get("invocation_params") or {}
        model = model_name(metadata, serialized, params)
        if model is None:
            model = str((serialized or {}).get("name") or "unknown-model")
        provider = pricing_provider((metadata or {}).get("ls_provider"))
        subject, dimensions = run_overrides(metadata)
        key = self._keys.key(metadata, "llm", run_id=run_id)
        call = ModelCall(
            model=model,
            provider=provider,
            messages=messages,
            prompt=prompt,
            max_output_tokens=max_tokens(metadata, params),
            idempotency_key=key,
            subject=subject,
            dimensions=dimensions,
            metadata={"framework": "langchain"},
        )
        guard = reserve_model_step(self.settings, call)
        if guard is None:
            return  # an earlier attempt of this LangGraph step already paid for this call
        entry = _Call(guard, call)
        # A cancelled ``agenerate`` never reaches on_llm_error (LangChain's gather is cancelled
        # before it can report), so the task that started the call settles it when it ends.
        task = _current_task()
        if task is not None:
            entry.task = task
            entry.on_done = functools.partial(self._abandoned, run_id)
            task.add_done_callback(entry.on_done)
        with self._lock:
            self._calls[run_id] = entry

    def _abandoned(self, run_id: UUID, task: asyncio.Task[Any]) -> None:
        with self._lock:
            call = self._calls.pop(run_id, None)
        if call is not None:
            self._settle_failed(call, asyncio.CancelledError())

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._calls.get(run_id)
        if call is not None and add_token(call.received, token, kwargs.get("chunk")):
            call.guard.mark_ran()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._calls.pop(run_id, None)
        if call is None:
            return
        call.detach()
        usage, version = result_usage(response)
        if not call.received:
            # Not streamed: the final generations are what was received.
            for generations in response.generations:
                for gen in generations:
                    call.received.add(gen.text or None)
        settle_model_call(
            call.guard,
            self.settings,
            call.request,
            received=call.received,
            usage=usage,
            model_version=version,
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._calls.pop(run_id, None)
        if call is None:
            return
        call.detach()
        self._settle_failed(call, error)

    def _settle_failed(self, call: _Call, error: BaseException) -> None:
        settle_model_call(
            call.guard, self.settings, call.request, received=call.received, error=error
        )

    # -- tools ---------------------------------------------------------------------------------
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = str((serialized or {}).get("name") or kwargs.get("name") or "tool")
        key = self._keys.key(metadata, f"tool.{name}", run_id=run_id)
        subject, _ = run_overrides(metadata)
        guard = reserve_tool_step(self.settings, name, idempotency_key=key, subject=subject)
        if guard is None:
            return  # tools not budgeted, or this step's tool call was already paid
        with self._lock:
            self._tools[run_id] = guard

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            guard = self._tools.pop(run_id, None)
        if guard is not None:
            guard.commit()

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            guard = self._tools.pop(run_id, None)
        if guard is not None:
            guard.finish(error)


def _as_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    # Only what is sent to the provider counts toward the estimate (not ids or metadata).
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.type, "content": m.content}
        tool_calls = getattr(m, "tool_calls", None)
        if tool_calls:
            d["tool_calls"] = [{"name": t["name"], "args": t["args"]} for t in tool_calls]
        out.append(d)
    return out
