"""A LlamaIndex function-calling LLM for tests: LlamaIndex's own ``FunctionCallingLLM`` base
with the provider replaced by a script (no network, no keys).

It reports usage the way OpenAI does (``raw["usage"]``, on the final chunk of a stream), names
its model in its metadata (``to_payload()``) and in a ``model`` field (older cores serialize
fields), and counts every call that reached the "provider".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import BaseTool
from pydantic import Field, PrivateAttr

from runcycles_core.pricing import Usage
from runcycles_testing import FakeSpec, ProviderError


def openai_usage(usage: Usage) -> dict[str, Any]:
    """``usage`` as OpenAI reports it (prompt includes cached, completion includes reasoning)."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class ScriptedLLM(FunctionCallingLLM):
    model: str = "gpt-4o"
    text: str = "The answer is 42."
    fail: bool = False
    hang: bool = False
    tool: str | None = None
    stream_chunks: int = 4
    report_usage: bool = True
    fail_after: int | None = None
    usage_report: dict[str, Any] = Field(default_factory=dict)
    seen_kwargs: list[dict[str, Any]] = Field(default_factory=list)
    _calls: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _release: threading.Event = PrivateAttr(default_factory=threading.Event)

    @classmethod
    def from_spec(cls, spec: FakeSpec, **extra: Any) -> ScriptedLLM:
        return cls(
            model=spec.model,
            text=spec.text,
            fail=spec.fail,
            hang=spec.hang,
            tool=spec.tool,
            stream_chunks=spec.stream_chunks,
            report_usage=spec.report_usage,
            fail_after=spec.fail_after,
            usage_report=openai_usage(spec.usage),
            seen_kwargs=[],
            **extra,
        )

    @classmethod
    def class_name(cls) -> str:
        return "ScriptedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            model_name=self.model,
            is_chat_model=True,
            is_function_calling_model=True,
            num_output=512,
        )

    @property
    def calls(self) -> int:
        return self._calls

    def unblock(self) -> None:
        self._release.set()

    # -- the "provider" ---------------------------------------------------------------------------
    def _enter(self, kwargs: dict[str, Any]) -> None:
        with self._lock:
            self._calls += 1
            self.seen_kwargs.append(dict(kwargs))
        if self.fail:
            raise ProviderError("the provider is down")

    def _reply(self, messages: Sequence[ChatMessage]) -> tuple[str, dict[str, Any]]:
        answered = any(m.role == MessageRole.TOOL for m in messages)
        if self.tool and not answered:
            call = {"id": "call-1", "name": self.tool, "args": {}}
            return "", {"tool_calls": [call]}
        return self.text, {}

    def _raw(self) -> dict[str, Any]:
        return {"model": f"{self.model}-2024-08-06", "usage": self.usage_report}

    def _response(self, text: str, extra: dict[str, Any], *, final: bool) -> ChatResponse:
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text, additional_kwargs=extra),
            delta="",
            raw=self._raw() if final and self.report_usage else {"model": self.model},
        )

    def _chunks(self, text: str) -> list[str]:
        # As FakeSpec.chunk_texts splits it (the suite computes expected charges from those).
        size = max(1, -(-len(text) // max(1, self.stream_chunks)))
        return [text[i : i + size] for i in range(0, len(text), size)] or [text]

    def _stream(self, messages: Sequence[ChatMessage]) -> Generator[ChatResponse, None, None]:
        text, extra = self._reply(messages)
        if extra:
            yield self._response(text, extra, final=True)
            return
        so_far = ""
        for n, piece in enumerate(self._chunks(text)):
            if self.fail_after is not None and n >= self.fail_after:
                raise ProviderError("the stream broke")
            so_far += piece
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=so_far),
                delta=piece,
                raw={"model": self.model},
            )
        # The usage chunk comes last, with no content (as OpenAI's include_usage chunk).
        yield ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=so_far),
            delta="",
            raw=self._raw() if self.report_usage else {"model": self.model},
        )

    # -- chat -------------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._enter(kwargs)
        if self.hang:
            self._release.wait(60)
        text, extra = self._reply(messages)
        return self._response(text, extra, final=True)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            self._enter(kwargs)
            yield from self._stream(messages)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._enter(kwargs)
        if self.hang:
            await asyncio.Event().wait()  # until cancelled
        text, extra = self._reply(messages)
        return self._response(text, extra, final=True)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        async def gen() -> AsyncGenerator[ChatResponse, None]:
            self._enter(kwargs)
            if self.hang:
                await asyncio.Event().wait()  # until cancelled
            for chunk in self._stream(messages):
                await asyncio.sleep(0)
                yield chunk

        return gen()

    # -- completion (through chat, as CustomLLM does: one call fires two nested LLM events) ------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        r = self.chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)
        return CompletionResponse(text=r.message.content or "", raw=r.raw)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            for r in self.stream_chat([ChatMessage(role=MessageRole.USER, content=prompt)]):
                yield CompletionResponse(
                    text=r.message.content or "", delta=r.delta or "", raw=r.raw
                )

        return gen()

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        r = await self.achat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)
        return CompletionResponse(text=r.message.content or "", raw=r.raw)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            chunks = await self.astream_chat([ChatMessage(role=MessageRole.USER, content=prompt)])
            async for r in chunks:
                yield CompletionResponse(
                    text=r.message.content or "", delta=r.delta or "", raw=r.raw
                )

        return gen()

    # -- tools ----------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            if isinstance(user_msg, str):
                user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
            messages.append(user_msg)
        return {"messages": messages, "tools": [t.metadata.get_name() for t in tools], **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls") or []
        return [
            ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"])
            for c in calls
        ]
