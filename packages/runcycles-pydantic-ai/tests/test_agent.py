"""Pydantic AI-specific behaviour against a real server: an agent stopped by a spent budget with
no model call, a denied tool that never runs, usage the provider omitted, cache and reasoning
tokens priced, per-run subjects, and the model the response names."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic_ai import Agent, models
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.fallback import FallbackModel
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage
from runcycles_pydantic_ai import BudgetExceededError, CyclesCapability, cycles_metadata
from runcycles_pydantic_ai._capability import PER_ATTEMPT

from runcycles_core.models import ReservationStatus
from runcycles_core.pricing import Usage, price
from runcycles_testing.bench import Bench

from .fakes import no_usage, request_usage

# No test may reach a real provider.
models.ALLOW_MODEL_REQUESTS = False

USAGE = Usage(input_tokens=1_000, output_tokens=200, cache_read_tokens=300, reasoning_tokens=50)
CALL_PRICE = price("gpt-4o", USAGE, "openai").amount


class Counted:
    """A FunctionModel body that counts its calls and reports OpenAI-like usage."""

    def __init__(self, usage: RequestUsage | None = None, model: str = "gpt-4o") -> None:
        self.__name__ = "counted"  # FunctionModel 1.x names itself after its function
        self.calls = 0
        self.usage = usage
        self.model = model

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        return ModelResponse(
            parts=[TextPart("The answer is 42.")],
            usage=self.usage or request_usage(USAGE),
            model_name=self.model,
            provider_name="openai",
        )


def _held(bench: Bench) -> list[object]:
    return [r for r in bench.reservations() if r.status is ReservationStatus.ACTIVE]


async def test_agent_stopped_once_budget_is_spent_without_calling_the_model(
    bench: Bench,
) -> None:
    # Room for exactly one request at its estimate: the first run pays, the second is denied.
    bench.fund({"": CALL_PRICE})
    body = Counted()
    agent = Agent(
        FunctionModel(body, model_name="gpt-4o"),
        capabilities=[CyclesCapability(bench.settings(estimate=CALL_PRICE))],
    )
    assert "42" in (await agent.run("first")).output
    assert body.calls == 1
    assert bench.spent() == CALL_PRICE
    with pytest.raises(BudgetExceededError) as info:
        await agent.run("second")
    assert info.value.error_code == "BUDGET_EXCEEDED"
    assert body.calls == 1, "the denied run never reached the model function"
    with pytest.raises(BudgetExceededError):
        async with agent.run_stream("third") as stream:
            await stream.get_output()
    assert body.calls == 1
    assert bench.spent() == CALL_PRICE
    assert _held(bench) == []


def test_run_sync_denied_before_the_model(bench: Bench) -> None:
    bench.fund({"": 1})
    body = Counted()
    agent = Agent(
        FunctionModel(body, model_name="gpt-4o"), capabilities=[CyclesCapability(bench.settings())]
    )
    with pytest.raises(BudgetExceededError):
        agent.run_sync("hi")
    assert body.calls == 0
    assert bench.reservations() == []


async def test_denied_tool_never_runs_and_ends_the_run(bench: Bench) -> None:
    bench.fund({"": 10**9})
    runs: list[int] = []
    agent = Agent(
        TestModel(call_tools=["lookup"]),
        capabilities=[CyclesCapability(bench.settings(tool_budgets={"*": 10**12}), model="gpt-4o")],
    )

    @agent.tool_plain
    def lookup() -> str:
        runs.append(1)
        return "42"

    with pytest.raises(BudgetExceededError):
        await agent.run("What is six times seven?")
    assert runs == []
    assert [r.action.kind for r in bench.reservations()] == ["llm.completion"]
    assert _held(bench) == []


async def test_cache_and_reasoning_tokens_are_priced(bench: Bench) -> None:
    bench.fund()
    body = Counted()
    agent = Agent(
        FunctionModel(body, model_name="gpt-4o"),
        capabilities=[CyclesCapability(bench.settings(estimate=1_000))],
    )
    await agent.run("hi")
    (row,) = bench.reservations()
    assert row.committed is not None and row.committed.amount == CALL_PRICE
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    assert meta.get("actual_source") == "priced_usage", meta


async def test_provider_omitting_usage_is_counted(bench: Bench) -> None:
    bench.fund()
    body = Counted(usage=no_usage())

    class NoUsage(FunctionModel):
        async def request(self, *args: object, **kwargs: object) -> ModelResponse:
            response = await super().request(*args, **kwargs)  # type: ignore[arg-type]
            response.usage = no_usage()  # FunctionModel would fill in its own estimate
            return response

    agent = Agent(
        NoUsage(body, model_name="gpt-4o"), capabilities=[CyclesCapability(bench.settings())]
    )
    await agent.run("What is six times seven?")
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    assert (meta.get("actual_source"), meta.get("outcome")) == ("counted", "no_usage")
    assert meta.get("counted_output_tokens", 0) > 0


async def test_per_run_subject_from_metadata(bench: Bench) -> None:
    bench.fund()
    agent = Agent(
        FunctionModel(Counted()),
        capabilities=[CyclesCapability(bench.settings(agent="cfg"), model="gpt-4o")],
    )
    await agent.run("hi", metadata=cycles_metadata(subject={"agent": "run"}, dimensions={"k": "v"}))
    (row,) = bench.reservations()
    assert row.subject.agent == "run"
    assert row.subject.dimensions == {"k": "v"}
    with pytest.raises(ValueError, match="tenant"):
        cycles_metadata(subject={"tenant": "other"})


def _down(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    raise ModelHTTPError(503, "gpt-4o", "overloaded")


_down.__name__ = "down"


async def test_fallback_model_reserves_for_the_first_and_commits_the_answering_model(
    bench: Bench,
) -> None:
    # FallbackModel tries its models inside one request attempt: one reservation, estimated for
    # the first model, committed as the model that answered (priced gpt-4o-mini usage).
    bench.fund()
    body = Counted(model="gpt-4o-mini")
    fallback = FallbackModel(
        FunctionModel(_down, model_name="gpt-4o"), FunctionModel(body, model_name="gpt-4o-mini")
    )
    agent = Agent(fallback, capabilities=[CyclesCapability(bench.settings())])
    assert "42" in (await agent.run("hi")).output
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    assert row.action.name is not None and "gpt-4o" in row.action.name
    assert row.committed is not None
    assert row.committed.amount == price("gpt-4o-mini", USAGE, "openai").amount


@pytest.mark.skipif(not PER_ATTEMPT, reason="prepare_model_request (per attempt) is from 2.64")
async def test_model_fallback_attempts_are_each_their_own_reservation(bench: Bench) -> None:
    from pydantic_ai.capabilities import ModelFallback  # type: ignore[attr-defined, unused-ignore]

    bench.fund()
    body = Counted(model="gpt-4o-mini")
    agent = Agent(
        FunctionModel(_down, model_name="gpt-4o"),
        capabilities=[
            CyclesCapability(bench.settings()),
            ModelFallback(FunctionModel(body, model_name="gpt-4o-mini")),
        ],
    )
    assert "42" in (await agent.run("hi")).output
    first, second = bench.reservations()
    # The failed attempt at gpt-4o returned its hold; the one gpt-4o-mini answered was priced.
    assert first.status is ReservationStatus.RELEASED
    assert first.action.name is not None and first.action.name.endswith("gpt-4o")
    assert second.status is ReservationStatus.COMMITTED
    assert second.action.name is not None and second.action.name.endswith("gpt-4o-mini")
    assert second.committed is not None
    assert second.committed.amount == price("gpt-4o-mini", USAGE, "openai").amount
    assert bench.spent() == second.committed.amount


async def test_run_stream_events_and_iter_denied_before_the_model(bench: Bench) -> None:
    bench.fund({"": 1})
    body = Counted()
    agent = Agent(
        FunctionModel(body, model_name="gpt-4o"), capabilities=[CyclesCapability(bench.settings())]
    )
    events: Any = agent.run_stream_events("hi")
    with pytest.raises(BudgetExceededError):
        if hasattr(events, "__aenter__"):  # 2.x: a context manager around the events
            async with events as stream:
                async for _ in stream:
                    pass
        else:
            async for _ in events:
                pass
    with pytest.raises(BudgetExceededError):
        async with agent.iter("hi") as run:
            async for _ in run:
                pass
    assert body.calls == 0
    assert bench.reservations() == []


@pytest.mark.skipif(
    "capabilities" not in inspect.signature(Agent.run).parameters,
    reason="run(capabilities=...) is not in this pydantic-ai-slim (1.x)",
)
async def test_per_run_capability(bench: Bench) -> None:
    bench.fund()
    body = Counted()
    agent = Agent(FunctionModel(body, model_name="gpt-4o"))
    run: Any = agent.run  # 1.x's stubs have no capabilities= (the test skips there)
    await run("hi", capabilities=[CyclesCapability(bench.settings())])
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    assert row.committed is not None and row.committed.amount == CALL_PRICE
