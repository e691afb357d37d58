"""LlamaIndex-specific behaviour against a real server: agents stopped by a spent budget with no
model call, nested LLM events reserved once, stream usage requested from OpenAI's LLM, tool
denials inside an agent run, and the convenience methods (complete, stream_complete)."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import MockLLM
from llama_index.core.tools import FunctionTool

from runcycles_core.models import ReservationStatus
from runcycles_core.pricing import default_pricing, price
from runcycles_llamaindex import BudgetExceededError, CyclesCallbackHandler, cycles_tools
from runcycles_testing import DEFAULT_USAGE
from runcycles_testing.bench import Bench

from .fakes import ScriptedLLM

CALL_PRICE = price("gpt-4o", DEFAULT_USAGE, "openai").amount


def _llm(bench: Bench, **fields: object) -> tuple[ScriptedLLM, CyclesCallbackHandler]:
    handler = CyclesCallbackHandler(bench.settings(**fields))  # type: ignore[arg-type]
    llm = ScriptedLLM(
        usage_report={
            "prompt_tokens": DEFAULT_USAGE.input_tokens,
            "completion_tokens": DEFAULT_USAGE.output_tokens,
            "prompt_tokens_details": {"cached_tokens": DEFAULT_USAGE.cache_read_tokens},
            "completion_tokens_details": {"reasoning_tokens": DEFAULT_USAGE.reasoning_tokens},
        },
        seen_kwargs=[],
        callback_manager=CallbackManager([handler]),
    )
    return llm, handler


def _held(bench: Bench) -> list[object]:
    return [r for r in bench.reservations() if r.status is ReservationStatus.ACTIVE]


@pytest.mark.parametrize("stream_events", [False, True], ids=["run", "stream_events"])
async def test_function_agent_stopped_once_budget_is_spent(
    bench: Bench, stream_events: bool
) -> None:
    # Room for exactly one call at its estimate: the first run pays, the second is denied.
    bench.fund()
    llm, _ = _llm(bench, estimate=CALL_PRICE)
    agent = FunctionAgent(llm=llm, tools=[])
    assert "42" in str(await agent.run("What is six times seven?"))
    assert llm.calls == 1
    assert bench.spent() == CALL_PRICE

    spent_out = Bench(bench.server, bench.tmp_path)
    spent_out.fund({"": CALL_PRICE})
    llm2, _ = _llm(spent_out, estimate=CALL_PRICE)
    agent2 = FunctionAgent(llm=llm2, tools=[])
    assert "42" in str(await agent2.run("first"))
    assert spent_out.spent() == CALL_PRICE
    handle = agent2.run("second")
    events: list[str] = []
    with pytest.raises(BudgetExceededError) as info:
        if stream_events:
            async for ev in handle.stream_events():
                events.append(type(ev).__name__)
        await handle
    assert info.value.error_code == "BUDGET_EXCEEDED"
    assert llm2.calls == 1, "the denied run never reached the model"
    assert spent_out.spent() == CALL_PRICE
    assert _held(spent_out) == []
    if stream_events:
        assert "AgentStream" not in events
    spent_out.close()


async def test_react_agent_on_mock_llm_is_denied(bench: Bench) -> None:
    # LlamaIndex's own MockLLM (no usage reported, no model name): the estimate is what counts.
    bench.fund({"": 10})
    handler = CyclesCallbackHandler(bench.settings(estimate=1_000))
    llm = MockLLM(max_tokens=5, callback_manager=CallbackManager([handler]))
    agent = ReActAgent(llm=llm, tools=[])
    with pytest.raises(BudgetExceededError):
        await agent.run("hi")
    assert bench.reservations() == []


async def test_mock_llm_without_usage_is_counted(bench: Bench) -> None:
    bench.fund()
    # MockLLM names no model: the handler's model= says what to price.
    handler = CyclesCallbackHandler(bench.settings(estimate=1_000), model="gpt-4o")
    llm = MockLLM(max_tokens=3, callback_manager=CallbackManager([handler]))
    # MockLLM.chat runs complete: two nested LLM events, one reservation.
    llm.chat([ChatMessage(role=MessageRole.USER, content="hi")])
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    # The kit's rule (a): prompt plus the answer ("text text text"), counted offline.
    assert meta.get("actual_source") == "counted", meta
    assert meta.get("outcome") == "no_usage"
    assert meta.get("counted_output_tokens") == default_pricing().token_counter("text text text")


def test_nested_events_reserve_once_and_commit_usage(bench: Bench) -> None:
    bench.fund()
    llm, _ = _llm(bench)
    # ScriptedLLM.complete runs chat (as CustomLLM and OpenAI's LLM do): one reservation.
    assert "42" in llm.complete("What is six times seven?").text
    chunks = list(llm.stream_complete("What is six times seven?"))
    assert chunks
    rows = bench.reservations()
    assert [r.status for r in rows] == [ReservationStatus.COMMITTED] * 2
    assert bench.spent() == 2 * CALL_PRICE


async def test_concurrent_achat_each_reserve_once(bench: Bench) -> None:
    bench.fund()
    llm, _ = _llm(bench)
    await asyncio.gather(
        *(llm.achat([ChatMessage(role=MessageRole.USER, content=f"q{i}")]) for i in range(3))
    )
    rows = bench.reservations()
    assert [r.status for r in rows] == [ReservationStatus.COMMITTED] * 3
    assert bench.spent() == 3 * CALL_PRICE


def test_openai_llm_asked_for_stream_usage(bench: Bench) -> None:
    bench.fund()

    class OpenAILikeScripted(ScriptedLLM):
        @classmethod
        def class_name(cls) -> str:
            return "openai_llm"  # what llama_index.llms.openai.OpenAI reports

    handler = CyclesCallbackHandler(bench.settings())
    llm = OpenAILikeScripted(seen_kwargs=[], callback_manager=CallbackManager([handler]))
    list(llm.stream_chat([ChatMessage(role=MessageRole.USER, content="hi")]))
    llm.chat([ChatMessage(role=MessageRole.USER, content="hi")], stream_options={"x": 1})
    assert llm.seen_kwargs[0]["stream_options"] == {"include_usage": True}
    assert llm.seen_kwargs[1]["stream_options"] == {"x": 1}, "a caller's own value is kept"
    # Other LLMs are called with exactly the caller's arguments.
    plain, _ = _llm(bench)
    plain.chat([ChatMessage(role=MessageRole.USER, content="hi")])
    assert plain.seen_kwargs == [{}]


async def test_denied_tool_never_runs_and_the_model_sees_the_error(bench: Bench) -> None:
    bench.fund()
    llm, handler = _llm(bench, tool_budgets={"*": 10**15})
    llm.tool = "lookup"
    runs: list[int] = []

    def lookup() -> str:
        """Looks the answer up."""
        runs.append(1)
        return "42"

    tools = cycles_tools([FunctionTool.from_defaults(fn=lookup)], handler.settings)
    handle = FunctionAgent(llm=llm, tools=list(tools)).run("What is six times seven?")
    try:
        results = [ev async for ev in handle.stream_events() if isinstance(ev, ToolCallResult)]
        await handle
    finally:
        await handler.settings.aclose()  # the async client the tool derived
    assert runs == []
    assert [r.tool_output.is_error for r in results] == [True]
    assert "insufficient remaining budget" in str(results[0].tool_output.content)
    # The run went on: both model calls were charged, the tool was never reserved.
    rows = bench.reservations()
    assert sorted(r.action.kind for r in rows) == ["llm.completion", "llm.completion"]
    assert bench.spent() == 2 * CALL_PRICE


def test_sync_tool_call_is_gated(bench: Bench) -> None:
    bench.fund()
    settings = bench.settings(tool_budgets={"lookup": 5_000})
    (tool,) = cycles_tools([FunctionTool.from_defaults(fn=lambda: "42", name="lookup")], settings)
    assert str(tool.call()) == "42"
    (row,) = bench.reservations()
    assert (row.action.kind, row.status) == ("tool.lookup", ReservationStatus.COMMITTED)
    assert bench.spent() == 5_000
