"""``CyclesCallbackHandler``: budget enforcement for every LlamaIndex LLM call."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload

from runcycles_core.lifecycle import Guard
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    model_guard,
    resolve_settings,
    settle_model_call,
)

from ._errors import BudgetExceededError
from ._mapping import (
    max_output_tokens,
    message_dicts,
    model_name,
    request_stream_usage,
    response_text,
    response_usage,
)
from ._scope import current_scope
from ._stream import current_span, track, untrack

__all__ = ["CyclesCallbackHandler"]

log = logging.getLogger("runcycles_llamaindex")

# The event id of the outermost LLM call open in this context. LlamaIndex's convenience
# methods call each other through decorated methods (CustomLLM.chat runs complete, achat runs
# chat, OpenAI's complete runs chat), so one call fires nested LLM events; only the outermost
# one is reserved. A value whose call has already ended is stale and ignored.
_OUTER: ContextVar[str | None] = ContextVar("runcycles_llamaindex_outer", default=None)


@dataclass
class _Call:
    guard: Guard
    model: str
    provider: str | None
    request: ModelCall
    span: str | None
    received: Received


class CyclesCallbackHandler(BaseCallbackHandler):
    """Reserve before every LLM call, commit its priced usage after, release on failure.

    Attach it to an LLM (``MyLLM(callback_manager=CallbackManager([handler]))`` or
    ``llm.callback_manager = ...``) or globally (``Settings.callback_manager``, applied to
    LLMs created afterwards). It covers ``chat`` / ``complete`` / ``stream_*`` and their async
    twins, and every LLM call of a ``FunctionAgent`` / ``ReActAgent`` / ``AgentWorkflow`` run
    built on that LLM (``run()``, ``stream_events()``).

    It is a *legacy* callback handler on purpose: LlamaIndex calls those without catching
    their exceptions, so a denial stops the call before the provider is contacted and reaches
    the caller as :class:`~runcycles_llamaindex.BudgetExceededError` (instrumentation handlers
    swallow every exception and cannot block). Handlers run inline, so under ``achat`` the
    reserve and commit requests block the event loop for their round trip.

    - LLM start (outermost call only): reserve the estimate priced from the model and the
      messages / prompt (or ``estimate=``), keyed by the event id; for LlamaIndex's OpenAI LLM
      ``stream_options.include_usage`` is added to the request so streams report usage.
    - LLM end: settled by the plugin kit's one rule (``runcycles_core.plugin``): the priced
      ``raw["usage"]`` (or ``additional_kwargs`` token counts) when reported; otherwise the
      prompt plus the output received, counted offline (``actual_source=counted``).
    - LLM end with an exception: a call that raised before any output is released; one that
      raised after partial output, was cancelled, or whose stream the consumer stopped early
      (``GeneratorExit``) pays the prompt plus the chunks received, counted offline. Chunks
      are seen through LlamaIndex's instrumentation (observe-only), which tags them with the
      call's span.

    Args:
        settings: a :class:`CyclesSettings`; or pass its fields as keyword arguments
            (``client=``, ``tenant=``, ``agent=``, ``estimate=``…).
        model: the model to price when the LLM does not name it (its metadata's
            ``model_name`` and its ``model`` field are used otherwise).
        provider: the genai-prices provider id, when the model name alone is ambiguous.
    """

    def __init__(
        self,
        settings: CyclesSettings | None = None,
        *,
        model: str | None = None,
        provider: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.settings = resolve_settings(settings, fields, denial_error=BudgetExceededError)
        self.model = model
        self.provider = provider
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self._nested: set[str] = set()

    # -- legacy callback interface -------------------------------------------------------------
    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(
        self,
        trace_id: str | None = None,
        trace_map: dict[str, list[str]] | None = None,
    ) -> None:
        return None

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        if event_type is not CBEventType.LLM:
            return event_id
        outer = _OUTER.get()
        with self._lock:
            if outer is not None and outer in self._calls:
                self._nested.add(event_id)
                return event_id
        self._reserve(payload or {}, event_id)
        _OUTER.set(event_id)
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        if event_type is not CBEventType.LLM:
            return
        with self._lock:
            if event_id in self._nested:
                self._nested.discard(event_id)
                return
            call = self._calls.pop(event_id, None)
        if call is None:
            return
        untrack(call.span)
        data = payload or {}
        error = data.get(EventPayload.EXCEPTION)
        if isinstance(error, BaseException):
            # Raised, cancelled, or a stream its consumer stopped (GeneratorExit): the kit's
            # rule releases, or charges the prompt plus the chunks received so far.
            settle_model_call(
                call.guard, self.settings, call.request, received=call.received, error=error
            )
            return
        response = data.get(EventPayload.RESPONSE) or data.get(EventPayload.COMPLETION)
        usage, version = response_usage(response)
        if not call.received:
            # Not streamed: the whole answer arrived at once.
            text = response_text(response)
            call.received.add(text or None)
        settle_model_call(
            call.guard,
            self.settings,
            call.request,
            received=call.received,
            usage=usage,
            model_version=version,
        )

    # -- implementation ------------------------------------------------------------------------
    def _reserve(self, payload: Mapping[str, Any], event_id: str) -> None:
        serialized = payload.get(EventPayload.SERIALIZED)
        if not isinstance(serialized, Mapping):
            serialized = {}
        model = self.model or model_name(serialized) or "unknown-model"
        messages = payload.get(EventPayload.MESSAGES)
        prompt = payload.get(EventPayload.PROMPT)
        scope = current_scope()
        request = ModelCall(
            model=model,
            provider=self.provider,
            messages=message_dicts(messages) if messages is not None else None,
            prompt=str(prompt) if messages is None and prompt is not None else None,
            max_output_tokens=max_output_tokens(serialized),
            idempotency_key=f"li:{event_id}",
            subject=scope.subject,
            dimensions=scope.dimensions,
            metadata={"framework": "llamaindex"},
        )
        guard = model_guard(self.settings, request).reserve()
        request_stream_usage(serialized, payload.get(EventPayload.ADDITIONAL_KWARGS))
        span = current_span()
        call = _Call(guard, model, self.provider, request, span, track(span))
        with self._lock:
            self._calls[event_id] = call
