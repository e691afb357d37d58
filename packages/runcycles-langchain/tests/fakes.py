"""LangChain's own fake chat model, made to behave like a priced provider.

``ScriptedChatModel`` subclasses :class:`GenericFakeChatModel` with a ``model_name`` (what
LangChain reports as ``ls_model_name``, so the plugin can price it), counts provider calls, and
streams a final chunk carrying ``usage_metadata`` the way providers report streaming usage
(``GenericFakeChatModel`` itself drops usage when streaming).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr

from runcycles_core.pricing import Usage
from runcycles_testing import FakeSpec, ProviderError


def usage_metadata(u: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        total_tokens=u.input_tokens + u.output_tokens,
        input_token_details={
            "cache_read": u.cache_read_tokens,
            "cache_creation": u.cache_write_tokens,
        },
        output_token_details={"reasoning": u.reasoning_tokens},
    )


class ScriptedChatModel(GenericFakeChatModel):
    """A fake provider driven by a :class:`FakeSpec`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = "gpt-4o"
    spec: FakeSpec
    #: fail only the first N provider calls (a transient provider error)
    fail_first: int = 0
    _calls: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _release: threading.Event = PrivateAttr(default_factory=threading.Event)

    @classmethod
    def from_spec(cls, spec: FakeSpec) -> ScriptedChatModel:
        usage = usage_metadata(spec.usage) if spec.report_usage else None
        final = AIMessage(
            spec.text,
            usage_metadata=usage,
            response_metadata={"model_name": spec.model},
        )
        replies: list[AIMessage] = [final]
        if spec.tool:
            call = {"name": spec.tool, "args": {}, "id": "call_1", "type": "tool_call"}
            first = AIMessage(
                "",
                tool_calls=[call],
                usage_metadata=usage,
                response_metadata={"model_name": spec.model},
            )
            replies = [first, final]
        return cls(model_name=spec.model, spec=spec, messages=itertools.cycle(replies))

    @property
    def calls(self) -> int:
        return self._calls

    def unblock(self) -> None:
        self._release.set()

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        # The script decides on tool calls; binding changes nothing (create_agent binds).
        return self

    # -- the "provider" --------------------------------------------------------------------------
    def _begin(self) -> None:
        with self._lock:
            self._calls += 1
            n = self._calls
        if self.spec.fail or n <= self.fail_first:
            raise ProviderError("the provider failed")

    def _next_reply(self) -> BaseMessage:
        with self._lock:
            reply = next(self.messages)
        return AIMessage(reply) if isinstance(reply, str) else reply

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._begin()
        if self.spec.hang:
            # A sync call cannot be cancelled from outside: wait until the test lets go.
            self._release.wait(30)
        return ChatResult(generations=[ChatGeneration(message=self._next_reply())])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._begin()
        if self.spec.hang:
            await asyncio.sleep(3600)
        return ChatResult(generations=[ChatGeneration(message=self._next_reply())])

    def _chunks(self) -> Iterator[AIMessageChunk]:
        reply = self._next_reply()
        text = str(reply.content) or "."
        n = max(1, self.spec.stream_chunks)
        parts = self.spec.chunk_texts(text)
        parts += [""] * (n - len(parts))
        for i, part in enumerate(parts[:n]):
            if self.spec.fail_after is not None and i >= self.spec.fail_after:
                raise ProviderError("the stream broke")
            yield AIMessageChunk(content=part)
        # Providers report usage in a final, content-less chunk.
        yield AIMessageChunk(
            content="",
            usage_metadata=usage_metadata(self.spec.usage) if self.spec.report_usage else None,
            response_metadata={"model_name": self.spec.model},
            tool_call_chunks=[
                tool_call_chunk(name=t["name"], args="{}", id=t["id"], index=i)
                for i, t in enumerate(getattr(reply, "tool_calls", []) or [])
            ],
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._begin()
        for chunk in self._chunks():
            gen = ChatGenerationChunk(message=chunk)
            if run_manager is not None and chunk.content:
                run_manager.on_llm_new_token(str(chunk.content), chunk=gen)
            yield gen
            time.sleep(0)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._begin()
        if self.spec.hang:
            await asyncio.sleep(3600)
        for chunk in self._chunks():
            gen = ChatGenerationChunk(message=chunk)
            if run_manager is not None and chunk.content:
                await run_manager.on_llm_new_token(str(chunk.content), chunk=gen)
            yield gen
            await asyncio.sleep(0)
