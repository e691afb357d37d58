"""Contract-suite adapters on the fake model client, wrapped in a CyclesChatCompletionClient
(tools in a CyclesWorkbench), two ways: one ``AssistantAgent`` and a one-agent
``RoundRobinGroupChat``, both run through :func:`run_team` / :func:`run_team_stream`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult, TaskRunner
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core.tools import FunctionTool
from runcycles_autogen import (
    BudgetExceededError,
    CyclesChatCompletionClient,
    CyclesWorkbench,
    run_team,
    run_team_stream,
)

from runcycles_core.plugin import CyclesSettings
from runcycles_core.pricing import Usage
from runcycles_testing import DEFAULT_USAGE, FakeSpec, Harness, PluginAdapter

from .fake import Counters, FakeChatCompletionClient

PROMPT = "What is six times seven?"

# AutoGen's RequestUsage carries prompt and completion tokens only (no cache or reasoning
# split), so the fake reports plain token counts and the suite prices them as such.
PLAIN_USAGE = Usage(
    input_tokens=DEFAULT_USAGE.input_tokens, output_tokens=DEFAULT_USAGE.output_tokens
)
NO_RETRY = (
    "AutoGen never re-runs a model call under the same identity: agents and teams have no "
    "step retry policy, and save_state/load_state restore message history rather than an "
    "in-flight call, so every create() is a new call with nothing to deduplicate against"
)
TEAM_CANCEL = (
    "a team runs its agents on its own agent runtime: cancelling the task awaiting team.run "
    "does not cancel the agent's in-flight model call (the runtime keeps it running until it "
    "ends, and it is settled then); the single-agent adapter covers cancellation"
)
TEAM_EARLY_STOP = (
    "closing a team's run_stream waits for the team's runtime to go idle, so the agent's model "
    "stream runs to its final CreateResult and is committed from its usage, never stopped "
    "early; the single-agent adapter covers a stream stopped early"
)


def _text(result: TaskResult) -> str:
    last = result.messages[-1]
    return str(last.content) if isinstance(last, TextMessage) else str(last)


class AgentHarness(Harness):
    def __init__(self, settings: CyclesSettings, fake: FakeSpec) -> None:
        self.counters = Counters()
        self.fake = FakeChatCompletionClient(fake, self.counters)
        self.client = CyclesChatCompletionClient(self.fake, settings=settings)
        self.tools = [self._tool(fake.tool)] if fake.tool else []

    def _tool(self, name: str) -> FunctionTool:
        def body() -> str:
            self.counters.tool()
            return "42"

        return FunctionTool(body, description="Looks the answer up.", name=name)

    @property
    def provider_calls(self) -> int:
        return self.counters.provider_calls

    @property
    def tool_calls(self) -> int:
        return self.counters.tool_runs

    def agent(self, *, stream: bool = False) -> AssistantAgent:
        workbench = CyclesWorkbench(self.tools, model_client=self.client) if self.tools else None
        return AssistantAgent(
            "assistant",
            model_client=self.client,
            workbench=workbench,
            reflect_on_tool_use=True,  # the tool's result goes back to the model: 2 calls
            model_client_stream=stream,
        )

    def runner(self, *, stream: bool = False) -> TaskRunner:
        return self.agent(stream=stream)

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        result = await run_team(self.runner(), task=PROMPT, subject=subject, dimensions=dimensions)
        return _text(result)

    async def stream(self, *, stop_after: int | None = None) -> int:
        seen = 0
        events = run_team_stream(self.runner(stream=True), task=PROMPT)
        try:
            async for event in events:
                if isinstance(event, ModelClientStreamingChunkEvent):
                    seen += 1
                    if stop_after is not None and seen >= stop_after:
                        break
        finally:
            await events.aclose()
        return seen

    async def retry_same_identity(self) -> None:
        raise AssertionError("declared unsupported")


class TeamHarness(AgentHarness):
    """The same agent as the only member of a RoundRobinGroupChat (the task + one answer)."""

    def runner(self, *, stream: bool = False) -> TaskRunner:
        return RoundRobinGroupChat(
            [self.agent(stream=stream)], termination_condition=MaxMessageTermination(2)
        )


FEATURES = frozenset({"report_usage", "fail_after"})


class AgentAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    usage = PLAIN_USAGE
    fake_features = FEATURES
    unsupported: ClassVar[Mapping[str, str]] = {"retry_same_identity": NO_RETRY}

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return AgentHarness(settings, fake)


class TeamAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    usage = PLAIN_USAGE
    fake_features = FEATURES
    unsupported: ClassVar[Mapping[str, str]] = {
        "retry_same_identity": NO_RETRY,
        "cancellation": TEAM_CANCEL,
        "stream_early_stop": TEAM_EARLY_STOP,
    }

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return TeamHarness(settings, fake)
