"""Handler behaviour beyond the shared contract: plain model calls, legacy LLMs, mapping."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage

from runcycles_core import BudgetExceededError as CoreBudgetExceededError
from runcycles_core.models import ReservationStatus
from runcycles_core.plugin import CyclesSettings
from runcycles_core.pricing import Usage, default_pricing
from runcycles_langchain import BudgetExceededError, CyclesCallbackHandler
from runcycles_langchain._mapping import message_usage, model_name, pricing_provider
from runcycles_testing import DEFAULT_USAGE, Bench, FakeSpec

from .fakes import ScriptedChatModel


def fake() -> ScriptedChatModel:
    return ScriptedChatModel.from_spec(FakeSpec(model="gpt-4o", usage=DEFAULT_USAGE))


def test_denial_on_a_plain_model_call_keeps_its_type(bench: Bench) -> None:
    bench.fund({"": 1})
    m = fake()
    handler = CyclesCallbackHandler(bench.settings())
    with pytest.raises(BudgetExceededError) as info:
        m.invoke("hello", {"callbacks": [handler]})
    assert isinstance(info.value, CoreBudgetExceededError)
    assert info.value.error_code == "BUDGET_EXCEEDED"
    assert m.calls == 0


async def test_denial_under_ainvoke_and_on_a_model_attached_handler(bench: Bench) -> None:
    bench.fund({"": 1})
    m = fake()
    m.callbacks = [CyclesCallbackHandler(bench.settings())]
    with pytest.raises(BudgetExceededError):
        await m.ainvoke("hello")
    assert m.calls == 0


def test_legacy_llm_without_usage_commits_the_offline_count(bench: Bench) -> None:
    bench.fund()
    llm = FakeListLLM(responses=["42"])
    handler = CyclesCallbackHandler(bench.settings(estimate=3_000))
    assert llm.invoke("six times seven?", {"callbacks": [handler]}) == "42"
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    # The kit's rule (a): the prompt and the answer, counted offline. FakeListLLM's model is
    # not priced, so the counted usage cannot be priced and the estimate stands in.
    assert meta.get("outcome") == "no_usage"
    assert row.committed is not None and row.committed.amount == 3_000
    assert meta.get("actual_source") == "estimate"


def test_settings_are_not_mutated_and_not_mixed(bench: Bench) -> None:
    settings = bench.settings()
    handler = CyclesCallbackHandler(settings)
    assert settings.denial_error is None
    assert handler.settings.denial_error is BudgetExceededError
    with pytest.raises(TypeError):
        CyclesCallbackHandler(settings, agent="x")
    assert CyclesCallbackHandler(client=settings.client, agent="a").settings.agent == "a"
    assert isinstance(handler.settings, CyclesSettings)


def test_usage_mapping_includes_cache_and_reasoning() -> None:
    msg = AIMessage(
        "x",
        usage_metadata={
            "input_tokens": 100,
            "output_tokens": 40,
            "total_tokens": 140,
            "input_token_details": {"cache_read": 30, "cache_creation": 20},
            "output_token_details": {"reasoning": 10},
        },
    )
    assert message_usage(msg) == Usage(
        input_tokens=100,
        output_tokens=40,
        cache_read_tokens=30,
        cache_write_tokens=20,
        reasoning_tokens=10,
    )
    # An inconsistent report is clamped rather than rejected.
    bad = AIMessage(
        "x",
        usage_metadata={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_token_details": {"cache_read": 50},
            "output_token_details": {"reasoning": 9},
        },
    )
    assert message_usage(bad) == Usage(
        input_tokens=10, output_tokens=5, cache_read_tokens=10, reasoning_tokens=5
    )
    assert message_usage(AIMessage("no usage")) is None


def test_model_and_provider_discovery() -> None:
    assert model_name({"ls_model_name": "gpt-4o"}, None, None) == "gpt-4o"
    assert model_name({}, None, {"model": "claude-sonnet-4-5"}) == "claude-sonnet-4-5"
    assert model_name(None, {"kwargs": {"model_name": "gpt-4o-mini"}}, None) == "gpt-4o-mini"
    assert model_name(None, None, None) is None
    assert pricing_provider("google_genai") == "google"
    assert pricing_provider("bedrock_converse") == "aws"
    assert pricing_provider("scriptedchatmodel") is None


def test_early_stop_commits_partial_usage_not_the_estimate(bench: Bench) -> None:
    bench.fund()
    m = ScriptedChatModel.from_spec(
        FakeSpec(model="gpt-4o", usage=DEFAULT_USAGE, stream_chunks=8, text="x" * 64)
    )
    handler = CyclesCallbackHandler(bench.settings())
    for _ in m.stream("hello", {"callbacks": [handler]}):
        break
    (row,) = bench.reservations()
    assert row.status is ReservationStatus.COMMITTED
    assert row.committed is not None
    # Prompt tokens plus the streamed tokens: a small fraction of the max-output estimate.
    assert 0 < row.committed.amount < row.reserved.amount // 100
    meta = bench.reader.get_reservation(row.reservation_id).committed_metadata or {}
    assert meta.get("outcome") == "stopped"
    assert meta.get("actual_source") == "counted"
    # One chunk of "x" * 8 was received before the consumer stopped.
    assert meta.get("counted_output_tokens") == max(1, default_pricing().token_counter("x" * 8))


def test_result_usage_sums_generations_and_falls_back_to_llm_output() -> None:
    from langchain_core.outputs import ChatGeneration, Generation, LLMResult

    from runcycles_langchain._mapping import result_usage

    def gen(n: int) -> ChatGeneration:
        return ChatGeneration(
            message=AIMessage(
                "x",
                usage_metadata={"input_tokens": n, "output_tokens": 1, "total_tokens": n + 1},
                response_metadata={"model_name": "gpt-4o-2024-08-06"},
            )
        )

    usage, version = result_usage(LLMResult(generations=[[gen(10), gen(20)]]))
    assert usage == Usage(input_tokens=30, output_tokens=2)
    assert version == "gpt-4o-2024-08-06"
    legacy = LLMResult(
        generations=[[Generation(text="x")]],
        llm_output={"token_usage": {"prompt_tokens": 7, "completion_tokens": 3}},
    )
    assert result_usage(legacy) == (Usage(input_tokens=7, output_tokens=3), None)
    assert result_usage(LLMResult(generations=[[Generation(text="x")]])) == (None, None)
