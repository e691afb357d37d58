"""A scripted model for tests: Pydantic AI's own ``FunctionModel`` driven by a
:class:`~runcycles_testing.FakeSpec` (no network, no keys).

It stands in for an OpenAI model: it names its model and the ``openai`` system, and reports the
spec's usage the way OpenAI does (on the response; for a stream, only once the stream has ended,
as OpenAI's final ``include_usage`` chunk), or no usage at all with ``report_usage=False``
(``unmeasured_requests`` on releases that have it, zero tokens before). ``FunctionModel``'s own
token *estimates* are replaced by that report: they are not what a provider bills.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.models.function import FunctionStreamedResponse as _Streamed
from pydantic_ai.usage import RequestUsage

from runcycles_core.pricing import Usage
from runcycles_testing import FakeSpec, ProviderError


def request_usage(usage: Usage) -> RequestUsage:
    """``usage`` as Pydantic AI reports it (input includes cache reads, output reasoning)."""
    fields: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
    }
    if "output_reasoning_tokens" in RequestUsage.__dataclass_fields__:
        fields["output_reasoning_tokens"] = usage.reasoning_tokens
    else:  # 1.x: the provider's count in details, as OpenAIChatModel 1.x reports it
        fields["details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return RequestUsage(**fields)


def no_usage() -> RequestUsage:
    """A response whose provider omitted usage."""
    if "unmeasured_requests" in RequestUsage.__dataclass_fields__:
        return RequestUsage(unmeasured_requests=1)  # type: ignore[call-arg, unused-ignore]
    return RequestUsage()


class _ReportedAtEnd(_Streamed):
    """A ``FunctionStreamedResponse`` with no usage until its stream ends, then the report."""

    final_usage: RequestUsage

    async def _get_event_iterator(self) -> AsyncIterator[Any]:
        async for event in super()._get_event_iterator():
            self._usage = RequestUsage()
            yield event
        self._usage = self.final_usage

    @property
    def provider_name(self) -> str | None:  # type: ignore[override, unused-ignore]
        return "openai"


class ScriptedModel(FunctionModel):
    def __init__(self, spec: FakeSpec) -> None:
        super().__init__(self._reply, stream_function=self._stream, model_name=spec.model)
        self.spec = spec
        self.calls = 0
        self.calls_lock = threading.Lock()

    @property
    def system(self) -> str:
        return "openai"

    # -- the "provider" ---------------------------------------------------------------------------
    async def _enter(self) -> None:
        with self.calls_lock:
            self.calls += 1
        if self.spec.fail:
            raise ProviderError("the provider is down")
        if self.spec.hang:
            await asyncio.Event().wait()  # until cancelled

    def _wants_tool(self, messages: Sequence[ModelMessage]) -> bool:
        answered = any(
            isinstance(p, ToolReturnPart)
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
        )
        return self.spec.tool is not None and not answered

    def _report(self) -> RequestUsage:
        return request_usage(self.spec.usage) if self.spec.report_usage else no_usage()

    async def _reply(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await self._enter()
        if self._wants_tool(messages):
            assert self.spec.tool is not None
            part: TextPart | ToolCallPart = ToolCallPart(self.spec.tool, {}, tool_call_id="call-1")
        else:
            part = TextPart(self.spec.text)
        return ModelResponse(parts=[part], usage=self._report(), provider_name="openai")

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        await self._enter()
        if self._wants_tool(messages):
            assert self.spec.tool is not None
            yield {0: DeltaToolCall(name=self.spec.tool, json_args="{}", tool_call_id="call-1")}
            return
        for n, piece in enumerate(self.spec.chunk_texts()):
            if self.spec.fail_after is not None and n >= self.spec.fail_after:
                raise ProviderError("the stream broke")
            await asyncio.sleep(0)
            yield piece

    async def request(self, *args: Any, **kwargs: Any) -> ModelResponse:
        response = await super().request(*args, **kwargs)
        # FunctionModel fills in its own estimate when a response has no usage: a provider that
        # omitted usage reports nothing.
        response.usage = self._report()
        return response

    @asynccontextmanager
    async def request_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with super().request_stream(*args, **kwargs) as streamed:
            streamed.__class__ = _ReportedAtEnd
            streamed.final_usage = self._report()  # type: ignore[attr-defined]
            yield streamed
