"""AutoGen's own agents and teams on the fake client, against real server-lite: denials with no
model call, typed denials out of teams, tool gating that never hangs, stream settlement."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, TaskResult, Team
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import ModelClientStreamingChunkEvent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.models import UserMessage
from autogen_core.tools import FunctionTool, ToolResult, ToolSchema, Workbench
from runcycles_autogen import (
    BudgetExceededError,
    CyclesChatCompletionClient,
    CyclesWorkbench,
    cycles_run,
    run_team,
    run_team_stream,
    selector_group_chat,
    unwrap_team_error,
)

from runcycles_core.models import ReservationStatus
from runcycles_core.plugin import CyclesSettings
from runcycles_core.pricing import price
from runcycles_testing import FakeSpec, ProviderError
from runcycles_testing.bench import Bench

from .adapters import PLAIN_USAGE
from .fake import Counters, FakeChatCompletionClient

SPEC = FakeSpec(model="gpt-4o", usage=PLAIN_USAGE)
COST = price("gpt-4o", PLAIN_USAGE, "openai").amount
TASK = "What is six times seven?"
# Every run here that could hang (a raising workbench hangs AssistantAgent forever) is bounded.
LIMIT = 20


def last_text(result: TaskResult) -> str:
    return str(getattr(result.messages[-1], "content", ""))


def wrapped(bench: Bench, spec: FakeSpec = SPEC, **settings: Any) -> CyclesChatCompletionClient:
    return CyclesChatCompletionClient(
        FakeChatCompletionClient(spec), settings=bench.settings(**settings)
    )


def fake_of(client: CyclesChatCompletionClient) -> FakeChatCompletionClient:
    assert isinstance(client.inner, FakeChatCompletionClient)
    return client.inner


def counting_tool(counters: Counters, name: str = "lookup") -> FunctionTool:
    def body() -> str:
        counters.tool()
        return "42"

    return FunctionTool(body, description="Looks the answer up.", name=name)


def team_of(*clients: CyclesChatCompletionClient) -> RoundRobinGroupChat:
    agents: list[ChatAgent | Team] = [
        AssistantAgent(f"a{i}", model_client=c) for i, c in enumerate(clients)
    ]
    return RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(3))


@pytest_asyncio.fixture(autouse=True)
async def _close_derived_clients(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    # The async client each settings object derives from its sync client lives on this test's
    # event loop: close it with the test (the contract suite's build fixture does the same).
    made: list[CyclesSettings] = []
    original = Bench.settings

    def settings(self: Bench, **kw: Any) -> CyclesSettings:
        made.append(original(self, **kw))
        return made[-1]

    monkeypatch.setattr(Bench, "settings", settings)
    yield
    for s in made:
        await s.aclose()


# -- a single AssistantAgent ---------------------------------------------------------------------
async def test_agent_is_stopped_with_no_model_call_once_the_budget_is_spent(bench: Bench) -> None:
    # Room for one call at its estimate (== its price), not two.
    bench.fund({"": COST + COST // 2})
    client = wrapped(bench, estimate=COST)
    first = await AssistantAgent("a", model_client=client).run(task=TASK)
    assert "42" in last_text(first)
    with pytest.raises(BudgetExceededError) as info:
        await AssistantAgent("a", model_client=client).run(task=TASK)
    # AssistantAgent.run lets the typed denial through; the second call never reached the model.
    assert type(info.value) is BudgetExceededError
    assert info.value.error_code == "BUDGET_EXCEEDED"
    assert fake_of(client).counters.provider_calls == 1
    assert [r.status for r in bench.reservations()] == [ReservationStatus.COMMITTED]
    assert bench.spent() == COST
    assert client.last_error is info.value


async def test_run_stream_denied_before_the_model(bench: Bench) -> None:
    bench.fund({"": 1})
    client = wrapped(bench)
    agent = AssistantAgent("a", model_client=client, model_client_stream=True)
    with pytest.raises(BudgetExceededError):
        async for _ in agent.run_stream(task=TASK):
            pass
    assert fake_of(client).counters.provider_calls == 0
    assert bench.reservations() == []


# -- teams ----------------------------------------------------------------------------------------
async def test_team_loses_the_type_and_run_team_restores_it(bench: Bench) -> None:
    bench.fund({"": 1})
    client = wrapped(bench)
    # AutoGen's own behaviour: a bare RuntimeError carrying only the type name, no cause.
    with pytest.raises(RuntimeError) as bare:
        await team_of(client).run(task=TASK)
    assert not isinstance(bare.value, BudgetExceededError)
    assert str(bare.value).startswith("BudgetExceededError:")
    assert bare.value.__cause__ is None
    first_denial = client.last_error
    # The documented way: the typed denial, AutoGen's RuntimeError as its cause.
    with pytest.raises(BudgetExceededError) as typed:
        await run_team(team_of(client), task=TASK)
    assert typed.value.error_code == "BUDGET_EXCEEDED"
    assert isinstance(typed.value.__cause__, RuntimeError)
    assert typed.value is client.last_error
    # And outside any scope, from the RuntimeError itself (its own denial, not the later one).
    assert unwrap_team_error(bare.value) is first_denial
    assert first_denial is not typed.value
    assert fake_of(client).counters.provider_calls == 0
    assert bench.reservations() == []


async def test_team_denial_typed_with_cycles_run_and_in_run_stream(bench: Bench) -> None:
    bench.fund({"": 1})
    client = wrapped(bench)
    with pytest.raises(BudgetExceededError), cycles_run() as run:
        await team_of(client).run(task=TASK)
    assert run.denial is not None and run.denial is client.last_error
    with pytest.raises(BudgetExceededError):
        async for _ in run_team_stream(team_of(client), task=TASK):
            pass
    assert fake_of(client).counters.provider_calls == 0


async def test_team_denial_after_spend_stops_the_next_agent(bench: Bench) -> None:
    bench.fund({"": COST + COST // 2})
    first, second = wrapped(bench, estimate=COST), wrapped(bench, estimate=COST)
    with pytest.raises(BudgetExceededError):
        await run_team(team_of(first, second), task=TASK)
    assert (fake_of(first).counters.provider_calls, fake_of(second).counters.provider_calls) == (
        1,
        0,
    )
    assert [r.status for r in bench.reservations()] == [ReservationStatus.COMMITTED]


async def test_team_provider_error_restored_and_released(bench: Bench) -> None:
    bench.fund()
    client = wrapped(bench, FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, fail=True))
    with pytest.raises(ProviderError):
        await run_team(team_of(client), task=TASK)
    assert [r.status for r in bench.reservations()] == [ReservationStatus.RELEASED]


async def test_selector_group_chat_budgets_the_selector(bench: Bench) -> None:
    bench.fund()
    settings = bench.settings()
    alpha = wrapped(bench)
    beta = CyclesChatCompletionClient(FakeChatCompletionClient(SPEC), settings=settings)
    selector_fake = FakeChatCompletionClient(
        FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, text="beta")
    )
    team = selector_group_chat(
        [
            AssistantAgent("alpha", model_client=alpha, description="A"),
            AssistantAgent("beta", model_client=beta, description="B"),
        ],
        selector_fake,
        settings=settings,
        termination_condition=MaxMessageTermination(3),
        allow_repeated_speaker=True,
    )
    result = await run_team(team, task=TASK)
    assert [m.source for m in result.messages] == ["user", "beta", "beta"]
    rows = bench.reservations()
    assert all(r.status is ReservationStatus.COMMITTED for r in rows)
    roles = [
        (bench.reader.get_reservation(r.reservation_id).metadata or {}).get("autogen_role")
        for r in rows
    ]
    # Selector, speaker, selector, speaker: every selection was reserved and committed too.
    assert roles == ["selector", None, "selector", None]
    assert selector_fake.counters.provider_calls == 2
    assert bench.spent() == 4 * COST


async def test_selector_denial_is_typed_at_the_caller(bench: Bench) -> None:
    bench.fund({"": 1})
    agent_client = wrapped(bench)
    selector_fake = FakeChatCompletionClient(FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, text="a"))
    team = selector_group_chat(
        [
            AssistantAgent("a", model_client=agent_client),
            AssistantAgent("b", model_client=agent_client),
        ],
        selector_fake,
        settings=agent_client.settings,
        termination_condition=MaxMessageTermination(3),
    )
    with pytest.raises(BudgetExceededError):
        await run_team(team, task=TASK)
    assert selector_fake.counters.provider_calls == 0
    assert fake_of(agent_client).counters.provider_calls == 0


# -- tools ----------------------------------------------------------------------------------------
def tool_agent(
    client: CyclesChatCompletionClient, counters: Counters, **settings: Any
) -> AssistantAgent:
    workbench = CyclesWorkbench([counting_tool(counters)], model_client=client, **settings)
    return AssistantAgent("t", model_client=client, workbench=workbench, reflect_on_tool_use=True)


async def test_denied_tool_returns_an_error_result_and_the_next_call_is_denied(
    bench: Bench,
) -> None:
    bench.fund()
    spec = FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, tool="lookup")
    client = wrapped(bench, spec, tool_budgets={"*": 10**15})
    counters = Counters()
    agent = tool_agent(client, counters)
    # No cycles_run: the workbench hands the denial to its linked model client.
    with pytest.raises(BudgetExceededError):
        await asyncio.wait_for(agent.run(task=TASK), LIMIT)
    assert counters.tool_runs == 0
    assert fake_of(client).counters.provider_calls == 1
    assert [(r.action.kind, r.status) for r in bench.reservations()] == [
        ("llm.completion", ReservationStatus.COMMITTED)
    ]
    # The model was shown why (the error result AutoGen puts in the history).
    history = await agent._model_context.get_messages()
    assert "budget denied" in str(history[-1])


async def test_denied_tool_in_a_team_reaches_the_caller_typed(bench: Bench) -> None:
    bench.fund()
    spec = FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, tool="lookup")
    client = wrapped(bench, spec)
    counters = Counters()
    team = RoundRobinGroupChat(
        [tool_agent(client, counters, settings=bench.settings(tool_budgets={"*": 10**15}))],
        termination_condition=MaxMessageTermination(2),
    )
    with pytest.raises(BudgetExceededError):
        await asyncio.wait_for(run_team(team, task=TASK), LIMIT)
    assert (counters.tool_runs, fake_of(client).counters.provider_calls) == (0, 1)


class Raising(Workbench):
    """A workbench whose tool raises (an MCP server gone away…)."""

    async def list_tools(self) -> list[ToolSchema]:
        return [
            {
                "name": "lookup",
                "description": "d",
                "parameters": {"type": "object", "properties": {}},
            }
        ]

    async def call_tool(
        self,
        name: str,
        arguments: Any = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        raise ConnectionError("tool server down")

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def reset(self) -> None: ...
    async def save_state(self) -> dict[str, Any]:
        return {}

    async def load_state(self, state: Any) -> None: ...


async def test_a_raising_inner_workbench_never_hangs_the_agent(bench: Bench) -> None:
    bench.fund()
    spec = FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, tool="lookup")
    client = wrapped(bench, spec)
    workbench = CyclesWorkbench(Raising(), model_client=client, tool_budgets={"lookup": 1_000})
    agent = AssistantAgent("t", model_client=client, workbench=workbench, reflect_on_tool_use=True)
    result = await asyncio.wait_for(agent.run(task=TASK), LIMIT)
    assert "42" in last_text(result)
    kinds = [(r.action.kind, r.status) for r in bench.reservations()]
    assert ("tool.lookup", ReservationStatus.RELEASED) in kinds
    assert fake_of(client).counters.provider_calls == 2


# -- streams --------------------------------------------------------------------------------------
async def test_stream_without_usage_is_counted_and_hinted(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    # What OpenAIChatCompletionClient streams without stream_options={"include_usage": True}.
    bench.fund()
    client = wrapped(bench, FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, report_usage=False))
    agent = AssistantAgent("s", model_client=client, model_client_stream=True)
    with caplog.at_level(logging.WARNING, logger="runcycles_autogen"):
        async for _ in agent.run_stream(task=TASK):
            pass
    (row,) = bench.reservations()
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    assert (meta.get("actual_source"), meta.get("outcome")) == ("counted", "no_usage"), meta
    assert row.committed is not None and 0 < row.committed.amount < COST
    assert "include_usage" in caplog.text


async def test_abandoned_stream_is_settled_by_close(bench: Bench) -> None:
    bench.fund()
    client = wrapped(bench, FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, stream_chunks=6))
    events = AssistantAgent("s", model_client=client, model_client_stream=True).run_stream(
        task=TASK
    )
    seen = 0
    async for event in events:
        if isinstance(event, ModelClientStreamingChunkEvent):
            seen += 1
            if seen == 2:
                break
    await events.aclose()
    # AutoGen does not close the model stream when its consumer stops: still held…
    assert [r.status for r in bench.reservations()] == [ReservationStatus.ACTIVE]
    # …until the run's owner closes the client (or cycles_run / run_team_stream ends).
    await client.close()
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    assert meta.get("outcome") == "stopped", meta
    assert fake_of(client).closed


# -- the wrapper itself ---------------------------------------------------------------------------
async def test_delegates_to_the_inner_client(bench: Bench) -> None:
    bench.fund()
    client = wrapped(bench)
    inner = fake_of(client)
    messages = [UserMessage(content="hi", source="user")]
    assert client.model_info == inner.model_info
    assert client.capabilities == inner.capabilities
    assert client.count_tokens(messages) == inner.count_tokens(messages) == 7
    assert client.remaining_tokens(messages) == inner.remaining_tokens(messages)
    await client.create(messages)
    assert client.total_usage() == inner.total_usage()
    assert client.actual_usage().prompt_tokens == PLAIN_USAGE.input_tokens
    assert client.model == "gpt-4o"


def test_model_must_be_known_and_wrapping_is_once(bench: Bench) -> None:
    inner = FakeChatCompletionClient(SPEC)
    inner._create_args = {}
    with pytest.raises(ValueError, match="model="):
        CyclesChatCompletionClient(inner, settings=bench.settings())
    client = CyclesChatCompletionClient(inner, settings=bench.settings(), model="gpt-4o-mini")
    assert client.model == "gpt-4o-mini"
    with pytest.raises(TypeError):
        CyclesChatCompletionClient(client, settings=bench.settings())


def test_a_client_without_a_model_in_its_config_needs_model(bench: Bench) -> None:
    # ReplayChatCompletionClient's component config names no model.
    from autogen_ext.models.replay import ReplayChatCompletionClient

    with pytest.raises(ValueError, match="model="):
        CyclesChatCompletionClient(ReplayChatCompletionClient(["x"]), settings=bench.settings())


async def test_cycles_run_settles_the_streams_a_consumer_abandoned(bench: Bench) -> None:
    bench.fund()
    client = wrapped(bench, FakeSpec(model="gpt-4o", usage=PLAIN_USAGE, stream_chunks=6))
    async with cycles_run():
        events = AssistantAgent("s", model_client=client, model_client_stream=True).run_stream(
            task=TASK
        )
        async for event in events:
            if isinstance(event, ModelClientStreamingChunkEvent):
                break
        await events.aclose()
        assert [r.status for r in bench.reservations()] == [ReservationStatus.ACTIVE]
    (row,) = bench.reservations()
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    assert (row.status, meta.get("outcome")) == (ReservationStatus.COMMITTED, "stopped"), meta


async def test_team_outage_is_typed_at_the_caller(bench: Bench) -> None:
    from runcycles_core import CyclesUnavailableError
    from runcycles_testing import DEAD_URL

    bench.fund()
    client = wrapped(bench, client_overrides={"base_url": DEAD_URL})
    with pytest.raises(CyclesUnavailableError):
        await run_team(team_of(client), task=TASK)
    assert fake_of(client).counters.provider_calls == 0
