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
from dataclasses import dataclass, field
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

from ._mapping import response_text

__all__ = ["Progress", "current_span", "track", "untrack"]


@dataclass
class Progress:
    chunks: int = 0
    text: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_TRACKED: dict[str, Progress] = {}
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
        progress = _TRACKED.get(span) if span else None
        if progress is None:
            return
        with progress.lock:
            progress.chunks += 1
            # Each chunk carries the text so far; keep the longest (the last).
            text = response_text(event.response)
            if len(text) >= len(progress.text):
                progress.text = text


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            get_dispatcher().add_event_handler(_ChunkCounter())
            _installed = True


def current_span() -> str | None:
    """The span id LlamaIndex tags this call's chunk events with."""
    return active_span_id.get()


def track(span: str | None) -> Progress | None:
    if not span:
        return None
    _install()
    progress = _TRACKED[span] = Progress()
    return progress


def untrack(span: str | None) -> None:
    if span:
        _TRACKED.pop(span, None)
