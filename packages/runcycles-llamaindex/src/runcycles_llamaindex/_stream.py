"""What a stream delivered before it ended: chunks and text, seen through instrumentation.

The legacy callbacks (the only hooks that can block) report a stream's start and end but not
its chunks. LlamaIndex's instrumentation dispatches an ``LLMChatInProgressEvent`` /
``LLMCompletionInProgressEvent`` for every chunk, tagged with the span id that was active when
the call's start callback ran. One observe-only event handler on the root dispatcher records
them for the calls a :class:`~runcycles_llamaindex.CyclesCallbackHandler` is tracking, so an
abandoned stream is paid for what it generated.
"""

from __future__ import annotations

import threading
from typing import Any

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatInProgressEvent,
    LLMCompletionInProgressEvent,
)
from llama_index.core.instrumentation.span import active_span_id

# llama_index.core.instrumentation re-exports it implicitly (invisible to type checkers); this
# is the package core itself imports it from.
from llama_index_instrumentation import get_dispatcher

from runcycles_core.plugin import Received

__all__ = ["current_span", "track", "untrack"]

_TRACKED: dict[str, Received] = {}
_installed = False
_install_lock = threading.Lock()


class _ChunkCounter(BaseEventHandler):
    @classmethod
    def class_name(cls) -> str:
        return "RuncyclesChunkCounter"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if not isinstance(event, (LLMChatInProgressEvent, LLMCompletionInProgressEvent)):
            return
        span = event.span_id
        received = _TRACKED.get(span) if span else None
        if received is None:
            return
        # Content chunks only: a closing chunk that carries just the usage is not output.
        delta = getattr(event.response, "delta", None)
        if isinstance(delta, str) and delta:
            received.add(delta)


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            get_dispatcher().add_event_handler(_ChunkCounter())
            _installed = True


def current_span() -> str | None:
    """The span id LlamaIndex tags this call's chunk events with."""
    return active_span_id.get()


def track(span: str | None) -> Received:
    """A fresh record of what the call tagged ``span`` receives (unrecorded without a span)."""
    received = Received()
    if span:
        _install()
        _TRACKED[span] = received
    return received


def untrack(span: str | None) -> None:
    if span:
        _TRACKED.pop(span, None)
