"""LangGraph retries and resumes reuse the idempotency keys of the attempt they repeat."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy

from runcycles_core.models import ReservationStatus
from runcycles_core.pricing import price
from runcycles_langchain import CyclesCallbackHandler
from runcycles_testing import DEFAULT_USAGE, Bench, FakeSpec, ProviderError

from .fakes import ScriptedChatModel

COST = price("gpt-4o", DEFAULT_USAGE).amount


class State(TypedDict):
    answer: str


class Transient(RuntimeError):
    pass


def model(**kw: Any) -> ScriptedChatModel:
    m = ScriptedChatModel.from_spec(FakeSpec(model="gpt-4o", usage=DEFAULT_USAGE))
    m.fail_first = kw.get("fail_first", 0)
    return m


def graph(node: Any) -> Any:
    g = StateGraph(State)
    retry = RetryPolicy(max_attempts=3, initial_interval=0.01, retry_on=(Transient, ProviderError))
    g.add_node("step", node, retry_policy=retry)
    g.add_edge(START, "step")
    g.add_edge("step", END)
    return g.compile(checkpointer=InMemorySaver())


def config(bench: Bench) -> RunnableConfig:
    handler = CyclesCallbackHandler(bench.settings())
    return {"callbacks": [handler], "configurable": {"thread_id": str(uuid.uuid4())}}


def test_retry_policy_rerun_pays_each_call_once(bench: Bench) -> None:
    bench.fund()
    m = model()
    attempts: list[int] = []

    def step(state: State, config: RunnableConfig) -> dict[str, str]:
        # Two distinct model calls per attempt, then a crash on the first attempt.
        m.invoke("first question", config)
        m.invoke("second question", config)
        attempts.append(1)
        if len(attempts) == 1:
            raise Transient("after both calls")
        return {"answer": "done"}

    assert graph(step).invoke({"answer": ""}, config(bench)) == {"answer": "done"}
    assert m.calls == 4
    rows = bench.reservations()
    assert [r.status for r in rows] == [ReservationStatus.COMMITTED] * 2
    assert bench.spent() == 2 * COST  # each distinct call once, the repeats not again
    assert all(r.idempotency_key and r.idempotency_key.startswith("lg:") for r in rows)


async def test_retry_after_provider_error_reserves_afresh(bench: Bench) -> None:
    bench.fund()
    m = model(fail_first=1)

    async def step(state: State, config: RunnableConfig) -> dict[str, str]:
        await m.ainvoke("question", config)
        return {"answer": "done"}

    assert await graph(step).ainvoke({"answer": ""}, config(bench)) == {"answer": "done"}
    assert m.calls == 2
    rows = bench.reservations()
    # The failed attempt was released; the retry could not reuse that released key.
    assert [r.status for r in rows] == [ReservationStatus.RELEASED, ReservationStatus.COMMITTED]
    assert rows[1].idempotency_key is not None and ":again1:" in rows[1].idempotency_key
    assert bench.spent() == COST


def test_same_run_id_outside_langgraph_is_one_charge(bench: Bench) -> None:
    bench.fund()
    m = model()
    handler = CyclesCallbackHandler(bench.settings())
    run_id = uuid.uuid4()
    for _ in range(2):
        m.invoke("question", {"callbacks": [handler], "run_id": run_id})
    assert m.calls == 2
    assert [r.status for r in bench.reservations()] == [ReservationStatus.COMMITTED]
    assert bench.spent() == COST


def test_distinct_runs_are_distinct_charges(bench: Bench) -> None:
    bench.fund()
    m = model()
    handler = CyclesCallbackHandler(bench.settings())
    m.invoke("question", {"callbacks": [handler]})
    m.invoke("question", {"callbacks": [handler]})
    assert bench.spent() == 2 * COST
