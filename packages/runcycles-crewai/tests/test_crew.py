"""CyclesLLM and cycles_crew on real crews (the test BaseLLM) against real server-lite."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from crewai import Agent, Crew, Task
from crewai.hooks import HookAborted
from crewai.hooks.dispatch import InterceptionPoint, get_hooks
from runcycles_crewai import SUPPORTED, CrewBudgetExceeded, CyclesLLM, cycles_crew, to_usage

from runcycles_core import BudgetExceededError
from runcycles_core.models import ReservationStatus
from runcycles_testing import DEFAULT_USAGE, FakeSpec
from runcycles_testing.bench import Bench

from .fake import Counters, fake_llm
from .test_contract import counting_tool

SPEC = FakeSpec(model="gpt-4o", usage=DEFAULT_USAGE)


def crew_of(llm: Any, *, tools: list[Any] | None = None, tasks: int = 1) -> Crew:
    agent = Agent(role="r", goal="answer", backstory="b", llm=llm, tools=tools or [], max_iter=4)
    jobs = [
        Task(description=f"Question {i}: six times seven?", expected_output="a number", agent=agent)
        for i in range(tasks)
    ]
    return Crew(agents=[agent], tasks=jobs, verbose=False)


def test_kickoff_denied_before_any_provider_call(bench: Bench) -> None:
    bench.fund({"": 1})
    counters = Counters()
    crew = crew_of(CyclesLLM(fake_llm(SPEC, counters), bench.settings()))
    with pytest.raises(BudgetExceededError) as info:
        crew.kickoff()
    # Out of kickoff() unchanged: core's type, CrewAI's abort type, the server's reason.
    assert type(info.value) is CrewBudgetExceeded
    assert isinstance(info.value, HookAborted)
    assert info.value.error_code == "BUDGET_EXCEEDED"
    assert counters.provider_calls == 0
    # One reservation attempt, denied: CrewAI did not retry it.
    assert bench.reservations() == []
    assert bench.spent() == 0


def test_commit_is_the_inner_usage_delta_and_usage_metrics_forwarded(bench: Bench) -> None:
    bench.fund()
    counters = Counters()
    inner = fake_llm(SPEC, counters)
    inner.call("warm-up: the inner LLM's counters are cumulative")
    crew = crew_of(CyclesLLM(inner, bench.settings()))
    crew.kickoff()
    assert counters.provider_calls == 2
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    detail = bench.reader.get_reservation(row.reservation_id)
    assert detail.committed_metadata is not None
    assert detail.committed_metadata.get("actual_source") == "priced_usage"
    # One call's tokens, not the cumulative two.
    metrics = crew.usage_metrics
    assert metrics is not None
    assert metrics.prompt_tokens == 2 * DEFAULT_USAGE.input_tokens  # forwarded, cumulative
    assert metrics.successful_requests == 2


def test_no_usage_reported_commits_the_counted_call(bench: Bench) -> None:
    bench.fund()
    counters = Counters()
    inner = fake_llm(SPEC, counters)
    inner.__dict__["_track_token_usage_internal"] = lambda usage: None  # provider reports none
    crew = crew_of(CyclesLLM(inner, bench.settings(estimate=5_000)))
    crew.kickoff()
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    # The kit's rule: prompt and answer counted offline, never the flat estimate.
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    assert meta.get("actual_source") == "counted", meta
    assert meta.get("outcome") == "no_usage", meta
    assert row.committed is not None and row.committed.amount > 0
    assert bench.spent() == row.committed.amount


def test_step_gate_stops_the_next_task_with_no_provider_call(bench: Bench) -> None:
    # The tool is denied in task 1; task 1's next LLM call and task 2 never reach the provider.
    bench.fund()
    counters = Counters()
    spec = FakeSpec(model="gpt-4o", usage=DEFAULT_USAGE, tool="lookup")
    crew = crew_of(
        CyclesLLM(fake_llm(spec, counters), bench.settings()),
        tools=[counting_tool("lookup", counters)],
        tasks=2,
    )
    with (
        pytest.raises(CrewBudgetExceeded),
        cycles_crew(crew, bench.settings(tool_budgets={"lookup": 10**15})) as run,
    ):
        crew.kickoff()
    assert (counters.provider_calls, counters.tool_runs) == (1, 0)
    assert [r.status for r in bench.reservations()] == [ReservationStatus.COMMITTED]
    # The step callback saw the blocked tool step and the hook's message was its result.
    assert [s.tool for s in run.steps] == ["lookup"]
    assert run.steps[0].blocked and "budget denied" in (run.steps[0].result or "")


def test_pending_denial_stops_at_pre_step(bench: Bench) -> None:
    bench.fund()
    counters = Counters()
    crew = crew_of(CyclesLLM(fake_llm(SPEC, counters), bench.settings()))
    with cycles_crew(crew, bench.settings()) as run:
        run.defer(CrewBudgetExceeded("denied earlier", error_code="BUDGET_EXCEEDED"))
        with pytest.raises(CrewBudgetExceeded):
            crew.kickoff()
    assert counters.provider_calls == 0
    assert bench.reservations() == []


def test_hooks_are_scoped_and_step_callback_restored(bench: Bench) -> None:
    seen: list[Any] = []
    crew = crew_of(CyclesLLM(fake_llm(SPEC, Counters()), bench.settings(shadow=True)))
    crew.step_callback = seen.append
    with cycles_crew(crew, bench.settings()):
        assert crew.step_callback is not seen.append
    assert crew.step_callback == seen.append
    assert all(get_hooks(p) == [] for p in InterceptionPoint)


def test_denial_error_must_be_a_hook_abort(bench: Bench) -> None:
    with pytest.raises(TypeError):
        CyclesLLM(fake_llm(SPEC, Counters()), bench.settings(denial_error=BudgetExceededError))


def test_to_usage_caps_inconsistent_counts() -> None:
    class M:
        prompt_tokens, completion_tokens = 10, 5
        cached_prompt_tokens, cache_creation_tokens, reasoning_tokens = 12, 3, 9

    u = to_usage(M())
    assert u is not None
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens) == (10, 10, 0)
    assert (u.output_tokens, u.reasoning_tokens) == (5, 5)


def test_pyproject_declares_the_supported_range() -> None:
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"{SUPPORTED}"' in text
    if sys.version_info >= (3, 11):
        import tomllib

        deps = tomllib.loads(text)["project"]["dependencies"]
        assert SUPPORTED in deps
    assert re.search(r"crewai>=1\.15\.19", SUPPORTED)


async def test_cancelled_kickoff_settles_when_the_call_returns(bench: Bench) -> None:
    import asyncio

    bench.fund()
    counters = Counters()
    inner = fake_llm(FakeSpec(model="gpt-4o", usage=DEFAULT_USAGE, hang=True), counters)
    crew = crew_of(CyclesLLM(inner, bench.settings()))
    task = asyncio.ensure_future(crew.akickoff())
    for _ in range(1000):  # until the provider call started (a counter, not an event)
        if counters.provider_calls:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    inner.release_hang()  # the worker thread's call now returns (raising)
    for _ in range(500):
        rows = bench.reservations()
        if rows and rows[0].status is not ReservationStatus.ACTIVE:
            break
        await asyncio.sleep(0.01)
    assert [r.status for r in bench.reservations()] == [ReservationStatus.RELEASED]
    assert bench.spent() == 0
