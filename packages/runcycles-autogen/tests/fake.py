"""A test ChatCompletionClient driven by a contract FakeSpec.

AutoGen's own ``ReplayChatCompletionClient`` overwrites ``prompt_tokens`` with its own count
(0 for tool-call results), so it cannot report the usage a test prescribes; this one does.
Like autogen-ext's clients it keeps its create arguments (``model``) in ``_create_args``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,  # type: ignore[attr-defined,unused-ignore]
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from runcycles_testing import FakeSpec, ProviderError

INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


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


class FakeChatCompletionClient(ChatCompletionClient):
    """Offline model: the answer, or first a call of ``spec.tool`` when set."""

    component_type = "model"

    def __init__(self, spec: FakeSpec, counters: Counters | None = None) -> None:
        self.spec = spec
        self.counters = counters or Counters()
        self._create_args: dict[str, Any] = {"model": spec.model}
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self.closed = False

    def _result(self, messages: Sequence[LLMMessage]) -> CreateResult:
        answered = bool(messages) and isinstance(messages[-1], FunctionExecutionResultMessage)
        u = self.spec.usage
        usage = (
            RequestUsage(prompt_tokens=u.input_tokens, completion_tokens=u.output_tokens)
            if self.spec.report_usage
            else RequestUsage(prompt_tokens=0, completion_tokens=0)
        )
        self._total = RequestUsage(
            prompt_tokens=self._total.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total.completion_tokens + usage.completion_tokens,
        )
        if self.spec.tool and not answered:
            call = FunctionCall(id="call-1", name=self.spec.tool, arguments="{}")
            return CreateResult(
                finish_reason="function_calls", content=[call], usage=usage, cached=False
            )
        return CreateResult(finish_reason="stop", content=self.spec.text, usage=usage, cached=False)

    async def _start(self) -> None:
        self.counters.provider()
        if self.spec.hang:
            await asyncio.Event().wait()  # until cancelled
        if self.spec.fail:
            raise ProviderError("provider 500")

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        await self._start()
        return self._result(messages)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        await self._start()
        result = self._result(messages)
        if isinstance(result.content, str):
            for sent, chunk in enumerate(self.spec.chunk_texts()):
                if self.spec.fail_after is not None and sent >= self.spec.fail_after:
                    raise ProviderError("stream broke after partial output")
                yield chunk
                await asyncio.sleep(0)
        # Usage arrives with the final result, the way providers report it (or as 0/0).
        yield result

    async def close(self) -> None:
        self.closed = True

    def actual_usage(self) -> RequestUsage:
        return self._total

    def total_usage(self) -> RequestUsage:
        return self._total

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return 7 * len(messages)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return 128_000 - self.count_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[valid-type,unused-ignore]
        return {"vision": False, "function_calling": True, "json_output": False}

    @property
    def model_info(self) -> ModelInfo:
        return INFO
