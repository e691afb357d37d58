"""The shared plugin contract suite, run on both entry points of the plugin.

- ``TestContractModel``: agents whose model is a :class:`CyclesModel` (tools gated by
  :class:`CyclesRunHooks` with ``llm=False``), the recommended setup.
- ``TestContractHooks``: plain agents run through ``CyclesRunHooks.run`` (model and tools
  gated by the hooks).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar, cast

from agents import Agent, Runner, function_tool
from agents.result import RunResultStreaming
from agents.stream_events import RawResponsesStreamEvent, StreamEvent
from agents.tool import Tool
from runcycles_openai_agents import (
    BudgetExceededError,
    CyclesModel,
    CyclesRunHooks,
    CyclesRunResultStreaming,
    cycles_run,
)

from runcycles_core.plugin import CyclesSettings
from runcycles_testing import ContractSuite, FakeSpec, Harness, PluginAdapter

from .scripted import FakeProvider, retry_once

QUESTION = "What is six times seven?"


class AgentsHarness(Harness):
    """One agent on the SDK's ScriptedModel, wired through the plugin."""

    def __init__(self, settings: CyclesSettings, fake: FakeSpec, *, via_hooks: bool) -> None:
        self.fake = fake
        self.via_hooks = via_hooks
        self.provider = FakeProvider(fake, named=via_hooks)
        self.hooks = CyclesRunHooks(settings, llm=via_hooks)
        model: Any = (
            self.provider.model
            if via_hooks
            else CyclesModel(self.provider.model, settings, model_name=fake.model)
        )
        tools: list[Tool] = []
        if fake.tool:
            tools.append(function_tool(self.provider.tool_body, name_override=fake.tool))
        self.agent: Agent[Any] = Agent(
            name="contract", instructions="Answer briefly.", model=model, tools=tools
        )

    @property
    def provider_calls(self) -> int:
        return self.provider.calls

    @property
    def tool_calls(self) -> int:
        return self.provider.tool_runs

    async def _run(self, agent: Agent[Any]) -> str:
        if self.via_hooks:
            result = await self.hooks.run(agent, QUESTION)
        else:
            result = await Runner.run(agent, QUESTION, hooks=self.hooks)
        return str(result.final_output)

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        with cycles_run(subject=subject, dimensions=dimensions):
            return await self._run(self.agent)

    async def stream(self, *, stop_after: int | None = None) -> int:
        result: RunResultStreaming | CyclesRunResultStreaming = (
            self.hooks.run_streamed(self.agent, QUESTION)
            if self.via_hooks
            else Runner.run_streamed(self.agent, QUESTION, hooks=self.hooks)
        )
        chunks = 0
        events = cast(AsyncGenerator[StreamEvent, None], result.stream_events())
        try:
            async for event in events:
                if (
                    isinstance(event, RawResponsesStreamEvent)
                    and event.data.type == "response.output_text.delta"
                ):
                    chunks += 1
                    if stop_after is not None and chunks >= stop_after:
                        result.cancel()
                        break
        finally:
            await events.aclose()  # as a consumer that stops early should
        if result.run_loop_task is not None:
            # The run's task settles the abandoned call; wait for it like an app's shutdown.
            with contextlib.suppress(BaseException):
                await result.run_loop_task
        return chunks

    async def retry_same_identity(self) -> None:
        self.provider.fail_next = True
        await self._run(self.agent.clone(model_settings=retry_once()))


class ModelAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    via_hooks: ClassVar[bool] = False
    fake_features: ClassVar[frozenset[str]] = frozenset({"report_usage", "fail_after"})

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return AgentsHarness(settings, fake, via_hooks=self.via_hooks)


class HooksAdapter(ModelAdapter):
    via_hooks = True
    unsupported: ClassVar[Mapping[str, str]] = {
        "stream_early_stop": (
            "RunHooks get no signal when a consumer abandons a stream (on_llm_end never "
            "fires), so hooks cannot tell a half-generated answer from an unstarted one; "
            "CyclesModel settles abandoned streams and passes this scenario"
        ),
        "settle_raise_after_partial": (
            "RunHooks see no streamed output (no per-delta hook), so a stream that broke "
            "after partial output looks like one that failed before any; CyclesModel counts "
            "the deltas and passes this scenario"
        ),
    }


class TestContractModel(ContractSuite):
    adapter = ModelAdapter()


class TestContractHooks(ContractSuite):
    adapter = HooksAdapter()
