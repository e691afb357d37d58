"""Contract-suite adapters on the scripted LLM, wired through :class:`CyclesCallbackHandler`
(LLM calls) and :func:`cycles_tools` (tool calls), three ways: a ``FunctionAgent`` run, and
LlamaIndex's lower-level tool calling (``achat_with_tools`` / ``chat_with_tools`` plus
``get_tool_calls_from_response``) driven through the async or the sync API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import ClassVar

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatResponse
from llama_index.core.tools import FunctionTool

from runcycles_core.plugin import CyclesSettings
from runcycles_llamaindex import (
    BudgetExceededError,
    CyclesCallbackHandler,
    cycles_run,
    cycles_tools,
)
from runcycles_testing import FakeSpec, Harness, PluginAdapter

from .fakes import ScriptedLLM

PROMPT = "What is six times seven?"

NO_STEP_IDENTITY = (
    "LlamaIndex gives LLM callbacks no step identity that survives a retry: every LLM event "
    "has a fresh random event_id, and a workflow step retry (retry_policy) or a re-run is "
    "indistinguishable from a new call, so a re-executed step is charged again"
)
WORKFLOW_CANCEL = (
    "cancelling the caller of an agent run (even with handler.cancel_run()) does not cancel "
    "the workflow's in-flight step task in llama-index-workflows, so the LLM call it awaits "
    "ends, and is settled, only when that task ends; the LLM adapters cover cancellation"
)
SYNC_CANCEL = (
    "a sync chat() running on a worker thread cannot be cancelled from outside; "
    "cancellation is covered by the async adapters"
)
TOOL_ERRORS_BECOME_RESULTS = (
    "LlamaIndex agent workflows catch every Exception a tool raises "
    "(BaseWorkflowAgent._call_tool) and hand it to the model as an error ToolOutput, so a "
    "denied tool never runs but the run goes on; test_agent.py checks that behaviour"
)


class AgentHarness(Harness):
    def __init__(self, settings: CyclesSettings, fake: FakeSpec, *, sync: bool = False) -> None:
        self.sync = sync
        self.handler = CyclesCallbackHandler(settings)
        self.llm = ScriptedLLM.from_spec(fake, callback_manager=CallbackManager([self.handler]))
        self._tool_runs = 0
        self._lock = threading.Lock()
        tools = [self._tool(fake.tool)] if fake.tool else []
        self.tools = cycles_tools(tools, self.handler.settings)

    def _tool(self, name: str) -> FunctionTool:
        def body() -> str:
            with self._lock:
                self._tool_runs += 1
            return "42"

        return FunctionTool.from_defaults(fn=body, name=name, description="Looks the answer up.")

    @property
    def provider_calls(self) -> int:
        return self.llm.calls

    @property
    def tool_calls(self) -> int:
        return self._tool_runs

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        agent = FunctionAgent(llm=self.llm, tools=list(self.tools), streaming=True)
        with cycles_run(subject=subject, dimensions=dimensions):
            handler = agent.run(PROMPT)
        try:
            result = await handler
        except asyncio.CancelledError:
            # Cancelling the caller does not stop the workflow's own step tasks; this does.
            await handler.cancel_run()
            raise
        return str(result)

    async def stream(self, *, stop_after: int | None = None) -> int:
        if self.sync:
            return await asyncio.to_thread(self._stream_sync, stop_after)
        stream = await self.llm.astream_chat([ChatMessage(role=MessageRole.USER, content=PROMPT)])
        seen = 0
        try:
            async for chunk in stream:
                seen += bool(chunk.delta)
                if stop_after is not None and seen >= stop_after:
                    break
        finally:
            await stream.aclose()
        return seen

    def _stream_sync(self, stop_after: int | None) -> int:
        stream = self.llm.stream_chat([ChatMessage(role=MessageRole.USER, content=PROMPT)])
        seen = 0
        try:
            for chunk in stream:
                seen += bool(chunk.delta)
                if stop_after is not None and seen >= stop_after:
                    break
        finally:
            stream.close()
        return seen

    async def retry_same_identity(self) -> None:
        raise AssertionError("declared unsupported")

    async def aclose(self) -> None:
        self.llm.unblock()


class ToolLoopHarness(AgentHarness):
    """The model called with the tools, the tool it picks called, the model called again."""

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        with cycles_run(subject=subject, dimensions=dimensions):
            if self.sync:
                return await asyncio.to_thread(self._loop_sync)
            return await self._loop()

    def _reply(self, response: ChatResponse) -> tuple[list[ChatMessage], str]:
        return [response.message], str(response.message.content or "")

    async def _loop(self) -> str:
        history = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
        while True:
            response = await self.llm.achat_with_tools(list(self.tools), chat_history=history)
            calls = self.llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
            if not calls:
                return str(response.message.content or "")
            history.append(response.message)
            for call in calls:
                tool = next(t for t in self.tools if t.metadata.get_name() == call.tool_name)
                output = await tool.acall(**call.tool_kwargs)
                history.append(_tool_message(call.tool_id, str(output)))

    def _loop_sync(self) -> str:
        history = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
        while True:
            response = self.llm.chat_with_tools(list(self.tools), chat_history=history)
            calls = self.llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
            if not calls:
                return str(response.message.content or "")
            history.append(response.message)
            for call in calls:
                tool = next(t for t in self.tools if t.metadata.get_name() == call.tool_name)
                output = tool.call(**call.tool_kwargs)
                history.append(_tool_message(call.tool_id, str(output)))


def _tool_message(call_id: str, content: str) -> ChatMessage:
    return ChatMessage(
        role=MessageRole.TOOL, content=content, additional_kwargs={"tool_call_id": call_id}
    )


FEATURES = frozenset({"report_usage", "fail_after"})


class AgentAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    fake_features = FEATURES
    unsupported: ClassVar[Mapping[str, str]] = {
        "retry_same_identity": NO_STEP_IDENTITY,
        "tool_denial": TOOL_ERRORS_BECOME_RESULTS,
        "cancellation": WORKFLOW_CANCEL,
    }

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return AgentHarness(settings, fake)


class LLMAsyncAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    fake_features = FEATURES
    unsupported: ClassVar[Mapping[str, str]] = {"retry_same_identity": NO_STEP_IDENTITY}

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return ToolLoopHarness(settings, fake)


class LLMSyncAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    fake_features = FEATURES
    unsupported: ClassVar[Mapping[str, str]] = {
        "retry_same_identity": NO_STEP_IDENTITY,
        "cancellation": SYNC_CANCEL,
    }

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return ToolLoopHarness(settings, fake, sync=True)
