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

from runcycles_core.integration import CyclesSettings, ModelCall, commit_usage, model_guard
from runcycles_core.lifecycle import Guard
from runcycles_core.pricing import Usage

from ._mapping import (
    max_output_tokens,
    message_dicts,
    model_name,
    request_stream_usage,
    response_usage,
)
from ._scope import current_scope
from ._settings import resolve_settings
from ._stream import Progress, current_span, track, untrack

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
    progress: Progress | None


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
    - LLM end: commit the priced ``raw["usage"]`` (or ``additional_kwargs`` token counts);
      no usage reported → the estimate is committed, tagged ``actual_source=estimate``.
    - LLM end with an exception: release, unless chunks were already streamed (a consumer
      that stops early raises ``GeneratorExit`` here): those are billed by the provider, so the
      partial usage, counted offline, is committed.

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
        self.settings = resolve_settings(settings, fields)
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
            self._settle_failed(call, error)
            return
        response = data.get(EventPayload.RESPONSE) or data.get(EventPayload.COMPLETION)
        usage, version = response_usage(response)
        if usage is None:
            log.warning("%s reported no usage; committing the estimate", call.model)
            call.guard.commit(metadata={"actual_source": "estimate", "reason": "no_usage"})
            return
        commit_usage(
            call.guard,
            self.settings,
            call.model,
            usage,
            provider=call.provider,
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

    def _settle_failed(self, call: _Call, error: BaseException) -> None:
        progress = call.progress
        chunks = progress.chunks if progress is not None else 0
        if not chunks:
            # Nothing was generated: give the hold back.
            call.guard.release(f"llm_call_failed: {type(error).__name__}")
            return
        # Chunks were streamed (and billed by the provider) before the consumer stopped or the
        # stream broke, and no usage chunk came: commit the partial usage, counted offline.
        assert progress is not None
        call.guard.commit_metadata["partial"] = type(error).__name__
        commit_usage(
            call.guard,
            self.settings,
            call.model,
            self._partial_usage(call.request, chunks, progress.text),
            provider=call.provider,
        )

    def _partial_usage(self, request: ModelCall, chunks: int, text: str) -> Usage:
        prices = self.settings.prices
        if request.messages is not None:
            inp = prices.count_input_tokens(messages=request.messages)
        else:
            inp = prices.count_input_tokens(prompt=request.prompt or "")
        # At least one token per streamed chunk (providers stream about one token per chunk).
        return Usage(input_tokens=inp, output_tokens=max(chunks, prices.token_counter(text)))
