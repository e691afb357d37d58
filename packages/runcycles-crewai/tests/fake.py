"""A test BaseLLM (CrewAI ships none): ReAct text, usage reported like a native provider,
optional tool call, failure, hang and streamed chunks, all driven by a contract FakeSpec."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from crewai import BaseLLM
from crewai.llms.base_llm import llm_call_context
from pydantic import PrivateAttr

from runcycles_testing import FakeSpec, ProviderError


class Counters:
    """Thread-safe counts of provider calls and tool-body runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.provider_calls = 0
        self.tool_runs = 0

    def provider(self) -> None:
        with self.lock:
            self.provider_calls += 1

    def tool(self) -> None:
        with self.lock:
            self.tool_runs += 1


class FakeLLM(BaseLLM):
    """Offline LLM for crews: the answer, or first a ReAct tool call when ``spec.tool``."""

    spec: Any
    counters: Any
    _released: threading.Event = PrivateAttr(default_factory=threading.Event)

    def _reply(self, messages: Any) -> str:
        if self.spec.tool:
            # The tool's result comes back in an assistant message ("Observation: ..."); the
            # system prompt mentions observations too, so only assistant turns tell.
            turns = [] if isinstance(messages, str) else messages
            answered = any(
                m.get("role") == "assistant" and "Observation:" in str(m.get("content"))
                for m in turns
            )
            if not answered:
                return f"Thought: use the tool\nAction: {self.spec.tool}\nAction Input: {{}}"
        # Plain text is a final answer to CrewAI: the provider output is the answer itself.
        return str(self.spec.text)

    def _usage(self) -> dict[str, int]:
        u = self.spec.usage
        return {
            "prompt_tokens": u.input_tokens,
            "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "cached_prompt_tokens": u.cache_read_tokens,
            "reasoning_tokens": u.reasoning_tokens,
        }

    def _run(self, messages: Any, from_task: Any, from_agent: Any) -> str:
        self.counters.provider()
        if self.spec.fail:
            raise ProviderError("provider 500")
        text = self._reply(messages)
        if self.stream:
            with llm_call_context():
                n = max(1, self.spec.stream_chunks)
                size = -(-len(text) // n)
                for sent, i in enumerate(range(0, len(text), size)):
                    if self.spec.fail_after is not None and sent >= self.spec.fail_after:
                        raise ProviderError("stream broke after partial output")
                    self._emit_stream_chunk_event(
                        chunk=text[i : i + size], from_task=from_task, from_agent=from_agent
                    )
                    time.sleep(0.01)
        # Usage arrives with the last chunk, the way providers report it (or never).
        if self.spec.report_usage:
            self._track_token_usage_internal(self._usage())
        return text

    def call(  # type: ignore[override,unused-ignore]
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
        **kwargs: Any,
    ) -> Any:
        if self.spec.hang:
            self.counters.provider()
            self._released.wait(30)
            raise ProviderError("hung call released")
        return self._run(messages, from_task, from_agent)

    async def acall(  # type: ignore[override,unused-ignore]
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
        **kwargs: Any,
    ) -> Any:
        if self.spec.hang:
            self.counters.provider()
            await asyncio.Event().wait()  # until cancelled
        return self._run(messages, from_task, from_agent)

    def release_hang(self) -> None:
        self._released.set()

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 128_000


def fake_llm(spec: FakeSpec, counters: Counters, *, stream: bool = False) -> FakeLLM:
    return FakeLLM(model=spec.model, spec=spec, counters=counters, stream=stream)
