"""What a streamed model request delivered before it ended, chunk by chunk.

A capability's request hooks see a stream only as a whole: ``wrap_model_request`` gets the
final (or, for a stopped stream, partial) response, and a stream that breaks reaches it as a
cancellation, with no response at all. So, where Pydantic AI lets a capability wrap the model
serving each attempt (``get_wrapper_model``, 2.63 and later), the capability wraps it in
:class:`CountingModel`, which records every content chunk the stream yields as the consumer pulls
it. The kit then charges a stream that broke or was stopped for exactly what it delivered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic_ai.messages import (
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
)
from pydantic_ai.models.wrapper import WrapperModel

from runcycles_core.plugin import Received

__all__ = ["CountingModel"]


def _feed(received: Received, event: object) -> None:
    if isinstance(event, PartStartEvent):
        part = event.part
        if isinstance(part, TextPart) and part.content:
            received.add(part.content)
        elif isinstance(part, ToolCallPart):
            received.add({"role": "assistant", "content": part.tool_name})
    elif isinstance(event, PartDeltaEvent):
        delta = event.delta
        if isinstance(delta, TextPartDelta) and delta.content_delta:
            received.add(delta.content_delta)


class CountingModel(WrapperModel):
    """The serving model, unchanged, except that its streams report their chunks to
    ``received`` (requests that are not streamed pass straight through)."""

    def __init__(self, wrapped: Any, received: Received) -> None:
        super().__init__(wrapped)
        self.received = received

    @asynccontextmanager
    async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with self.wrapped.request_stream(*args, **kwargs) as streamed:
            # The stream's event source, before the consumer starts pulling from it (a stream
            # already being iterated is left alone: its chunks go uncounted, as before 2.63).
            source = getattr(streamed, "_get_event_iterator", None)
            if callable(source) and getattr(streamed, "_event_iterator", None) is None:
                received = self.received

                async def counted() -> AsyncIterator[Any]:
                    async for event in source():
                        _feed(received, event)
                        yield event

                streamed._get_event_iterator = counted  # type: ignore[method-assign]
            yield streamed
