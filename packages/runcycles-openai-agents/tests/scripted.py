"""The SDK's own ScriptedModel, scripted from the contract suite's FakeSpec.

Every provider call is answered by a responder (so one model serves any number of runs, also
concurrently): it counts the call, then fails, hangs, asks for the tool once per run, or
answers. Streamed answers are the SDK's own synthesized event stream, re-yielded with a short
pause after each event so a consumer can stop before the final usage event arrives.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from agents import ModelSettings
from agents.items import TResponseStreamEvent
from agents.retry import ModelRetrySettings, RetryDecision
from agents.testing import ModelCall, ModelStep, ScriptedModel, function_call
from agents.usage import Usage as AgentsUsage
from openai.types.responses import ResponseOutputMessage, ResponseOutputText
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from runcycles_core.pricing import Usage
from runcycles_testing import FakeSpec, ProviderError

STEPS = 200  # more than any scenario makes on one harness


def sdk_usage(usage: Usage) -> AgentsUsage:
    """The SDK's usage object for core's Usage (the inverse of the plugin's mapping)."""
    return AgentsUsage(
        requests=1,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        input_tokens_details=InputTokensDetails.model_validate(
            {
                "cached_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
            }
        ),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens),
    )


def message(fake: FakeSpec) -> ResponseOutputMessage:
    """An assistant message whose text arrives as the fake's content chunks (one content part,
    so one stream delta, each)."""
    chunks = fake.chunk_texts()
    return ResponseOutputMessage(
        id="msg_scripted",
        type="message",
        role="assistant",
        status="completed",
        content=[
            ResponseOutputText(type="output_text", text=c, annotations=[], logprobs=[])
            for c in chunks
        ],
    )


def retry_once() -> ModelSettings:
    """The SDK's own runner-managed retry: re-send a failed call once, at once."""
    return ModelSettings(
        retry=ModelRetrySettings(
            max_retries=1, policy=lambda _ctx: RetryDecision(retry=True, delay=0.0)
        )
    )


class FakeProvider:
    """Counts provider calls and tool runs; builds the ScriptedModel answering per FakeSpec."""

    def __init__(self, fake: FakeSpec, *, named: bool = False) -> None:
        self.fake = fake
        self.calls = 0
        self.tool_runs = 0
        self.fail_next = False
        self._lock = threading.Lock()
        self.model = ScriptedModel([ModelStep.respond(self._respond) for _ in range(STEPS)])
        if named:
            # Like the SDK's OpenAI models, which expose the model name as ``.model``.
            self.model.model = fake.model  # type: ignore[attr-defined]

    def tool_body(self) -> str:
        with self._lock:
            self.tool_runs += 1
        return "42"

    async def _respond(self, call: ModelCall) -> Any:
        with self._lock:
            self.calls += 1
            fail, self.fail_next = self.fail_next, False
        if self.fake.fail or fail:
            raise ProviderError("the fake provider failed")
        if self.fake.hang:
            await asyncio.sleep(3600)
        items = call.input if isinstance(call.input, list) else []
        tool_done = any(
            isinstance(i, dict) and i.get("type") == "function_call_output" for i in items
        )
        if self.fake.tool and not tool_done:
            output: list[Any] = [function_call(self.fake.tool, "{}", call_id="call_lookup")]
        else:
            output = [message(self.fake)]
        usage = sdk_usage(self.fake.usage if self.fake.report_usage else Usage())
        step = ModelStep(output=output, usage=usage)
        if not call.streamed:
            return step
        return ModelStep.stream(
            lambda c: self._slow_stream(c, step, self.fake.fail_after),
            output=output,
            usage=step.usage,
        )

    @staticmethod
    async def _slow_stream(
        call: ModelCall, step: ModelStep, fail_after: int | None
    ) -> AsyncIterator[TResponseStreamEvent]:
        deltas = 0
        source = ScriptedModel([step])
        async for event in source.stream_response(
            call.system_instructions,
            call.input,
            call.model_settings,
            call.tools,
            call.output_schema,
            call.handoffs,
            call.tracing,
            previous_response_id=call.previous_response_id,
            conversation_id=call.conversation_id,
            prompt=call.prompt,
        ):
            if getattr(event, "type", None) == "response.output_text.delta":
                if fail_after is not None and deltas >= fail_after:
                    raise ProviderError("the stream broke")
                deltas += 1
            yield event
            await asyncio.sleep(0.01)
