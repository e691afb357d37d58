"""Contract-suite adapter: a LlamaIndex ``FunctionAgent`` on the scripted LLM, wired through
:class:`CyclesCallbackHandler` (LLM calls) and :func:`cycles_tools` (tool calls)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import ClassVar

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager
from llama_index.core.tools import FunctionTool

from runcycles_core.integration import CyclesSettings
from runcycles_llamaindex import BudgetExceededError, CyclesCallbackHandler, cycles_run, cycles_tools
from runcycles_testing import FakeSpec, Harness, PluginAdapter

from .fakes import ScriptedLLM

PROMPT = "What is six times seven?"

NO_STEP_IDENTITY = (
    "LlamaIndex gives LLM callbacks no step identity that survives a retry: every LLM event "
    "has a fresh random event_id, and a workflow step retry (retry_policy) or a re-run is "
    "indistinguishable from a new call, so a re-executed step is charged again"
)
TOOL_ERRORS_BECOME_RESULTS = (
    "LlamaIndex agent workflows catch every Exception a tool raises "
    "(BaseWorkflowAgent._call_tool) and hand it to the model as an error ToolOutput, so a "
    "denied tool never runs but the run goes on; test_agent.py checks that behaviour"
)


class AgentHarness(Harness):
    def __init__(self, settings: CyclesSettings, fake: FakeSpec) -> None:
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
        stream = await self.llm.astream_chat([ChatMessage(role=MessageRole.USER, content=PROMPT)])
        seen = 0
        try:
            async for chunk in stream:
                seen += bool(chunk.delta)
                if stop_after is not None and seen >= stop_after:
                    break
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return seen

    async def retry_same_identity(self) -> None:
        raise AssertionError("declared unsupported")

    async def aclose(self) -> None:
        self.llm.unblock()


class AgentAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    unsupported: ClassVar[Mapping[str, str]] = {
        "retry_same_identity": NO_STEP_IDENTITY,
        "tool_denial": TOOL_ERRORS_BECOME_RESULTS,
    }

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return AgentHarness(settings, fake)
