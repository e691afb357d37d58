"""CyclesModel on the SDK's own ScriptedModel, against a real server-lite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner
from agents.retry import ModelRetrySettings, RetryDecision
from agents.testing import ModelStep, ScriptedModel, assistant_message
from agents.usage import Usage as AgentsUsage
from openai.types.responses import ResponseTextDeltaEvent
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from runcycles_openai_agents import BudgetExceededError, CyclesModel, cycles_run
from runcycles_openai_agents._usage import request_messages

import runcycles_core as rc
from runcycles_core.plugin import CyclesSettings, ModelCall, Received, counted_usage
from runcycles_core.pricing import Usage, price

from .conftest import MODEL, Tenant


def counted(messages: list[Any], deltas: list[str]) -> Usage:
    """What the kit's rule charges for a call that reported no usage: prompt + received."""
    received = Received()
    for d in deltas:
        received.add(d)
    return counted_usage(CyclesSettings(), ModelCall(model=MODEL, messages=messages), received)


def sdk_usage(
    input_tokens: int = 120, output_tokens: int = 40, cached: int = 20, reasoning: int = 10
) -> AgentsUsage:
    return AgentsUsage(
        requests=1,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_tokens_details=InputTokensDetails.model_validate(
            {"cached_tokens": cached, "cache_write_tokens": 0}
        ),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
    )


def priced(
    input_tokens: int = 120, output_tokens: int = 40, cached: int = 20, reasoning: int = 10
) -> int:
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )
    return price(MODEL, usage).amount


def reply(text: str = "hi", **usage: int) -> ModelStep:
    return ModelStep(output=[assistant_message(text)], usage=sdk_usage(**usage))


async def test_commit_is_the_priced_usage_with_cache_and_reasoning(tenant: Tenant) -> None:
    inner = ScriptedModel([reply()])
    agent = Agent(name="a", model=CyclesModel(inner, tenant.settings(), model_name=MODEL))
    result = await Runner.run(agent, "hello")
    assert result.final_output == "hi"
    assert tenant.spent() == priced()
    assert tenant.reserved() == 0


async def test_denied_before_the_model_is_called(make_tenant: Any) -> None:
    tenant = make_tenant({"": 10})
    inner = ScriptedModel([reply()])
    agent = Agent(name="a", model=CyclesModel(inner, tenant.settings(), model_name=MODEL))
    with pytest.raises(BudgetExceededError) as info:
        await Runner.run(agent, "hello")
    assert isinstance(info.value, rc.BudgetExceededError)
    assert info.value.error_code == "BUDGET_EXCEEDED"
    assert inner.calls == ()
    assert inner.remaining_steps == 1
    assert tenant.spent() == 0


async def test_released_when_the_model_raises(tenant: Tenant) -> None:
    inner = ScriptedModel([ModelStep(error=RuntimeError("provider down"))])
    agent = Agent(name="a", model=CyclesModel(inner, tenant.settings(), model_name=MODEL))
    with pytest.raises(RuntimeError, match="provider down"):
        await Runner.run(agent, "hello")
    assert len(inner.calls) == 1
    assert tenant.spent() == 0
    assert tenant.reserved() == 0


async def test_streaming_commits_the_completed_usage(tenant: Tenant) -> None:
    inner = ScriptedModel([reply("streamed")])
    agent = Agent(name="a", model=CyclesModel(inner, tenant.settings(), model_name=MODEL))
    result = Runner.run_streamed(agent, "hello")
    kinds = [event.type async for event in result.stream_events()]
    assert "raw_response_event" in kinds
    assert result.final_output == "streamed"
    assert tenant.spent() == priced()
    assert tenant.reserved() == 0


async def eventually(check: Any, timeout: float = 5.0) -> None:
    """Wait for a settlement that runs in a cancelled run's task."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


DELTAS = ["The answer ", "is forty ", "two, and here is why: "]


def hanging_stream(call: Any) -> AsyncIterator[Any]:
    async def events() -> AsyncIterator[Any]:
        for i, delta in enumerate(DELTAS):
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta",
                item_id="msg_1",
                output_index=0,
                content_index=0,
                delta=delta,
                logprobs=[],
                sequence_number=i,
            )
        await asyncio.sleep(60)  # the provider is still generating when the consumer stops

    return events()


async def test_stream_stopped_early_commits_the_partial_usage(tenant: Tenant) -> None:
    inner = ScriptedModel([ModelStep.stream(hanging_stream)])
    agent = Agent(name="a", model=CyclesModel(inner, tenant.settings(), model_name=MODEL))
    result = Runner.run_streamed(agent, "hello")
    seen = 0
    async for event in result.stream_events():
        if event.type == "raw_response_event" and getattr(event.data, "delta", None):
            seen += 1
            if seen == len(DELTAS):
                result.cancel()
    await eventually(lambda: tenant.reserved() == 0)
    expected = counted(request_messages(None, inner.calls[0].input), DELTAS)
    assert expected.output_tokens > 0
    assert tenant.spent() == price(MODEL, expected).amount


async def test_cancelled_call_pays_its_prompt(tenant: Tenant) -> None:
    started = asyncio.Event()

    async def hang(call: Any) -> Any:
        started.set()
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    inner = ScriptedModel([ModelStep.respond(hang)])
    agent = Agent(name="a", model=CyclesModel(inner, tenant.settings(), model_name=MODEL))
    task = asyncio.ensure_future(Runner.run(agent, "hello"))
    await asyncio.wait_for(started.wait(), 10)
    assert tenant.reserved() > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tenant.reserved() == 0
    # The request reached the provider, which bills the prompt: the kit's rule (c).
    expected = counted(request_messages(None, inner.calls[0].input), [])
    assert expected.input_tokens > 0 and expected.output_tokens == 0
    assert tenant.spent() == price(MODEL, expected).amount


async def test_sdk_retry_pays_once_with_distinct_attempt_keys(tenant: Tenant) -> None:
    inner = ScriptedModel([ModelStep(error=RuntimeError("flaky")), reply()])
    model = CyclesModel(inner, tenant.settings(), model_name=MODEL)
    retry = ModelRetrySettings(
        max_retries=2, policy=lambda ctx: RetryDecision(retry=True, delay=0.0)
    )
    agent = Agent(name="a", model=model, model_settings=ModelSettings(retry=retry))
    with cycles_run("run-retry") as scope:
        await Runner.run(agent, "hello")
    assert len(inner.calls) == 2
    assert tenant.spent() == priced()
    assert tenant.reserved() == 0
    assert scope.model_key() == "run-retry:turn2"  # the retry did not count as a new turn


async def test_replaying_a_named_execution_pays_once(tenant: Tenant) -> None:
    settings = tenant.settings()
    # e.g. a workflow engine re-running the same activity: the model answers again, with
    # different usage this time, and the step is still paid once.
    for step in (reply(), reply(input_tokens=900, cached=0)):
        inner = ScriptedModel([step])
        agent = Agent(name="a", model=CyclesModel(inner, settings, model_name=MODEL))
        with cycles_run("order-1234"):
            assert (await Runner.run(agent, "hello")).final_output == "hi"
        assert len(inner.calls) == 1
    assert tenant.spent() == priced()
    assert tenant.reserved() == 0


async def test_replaying_a_failed_execution_reserves_afresh(tenant: Tenant) -> None:
    settings = tenant.settings()
    failing = ScriptedModel([ModelStep(error=RuntimeError("provider down"))])
    agent = Agent(name="a", model=CyclesModel(failing, settings, model_name=MODEL))
    with cycles_run("order-77"), pytest.raises(RuntimeError):
        await Runner.run(agent, "hello")
    agent = Agent(name="a", model=CyclesModel(ScriptedModel([reply()]), settings, model_name=MODEL))
    with cycles_run("order-77"):
        await Runner.run(agent, "hello")
    assert tenant.spent() == priced()
    assert tenant.reserved() == 0


async def test_per_run_subject_and_dimensions(make_tenant: Any) -> None:
    tenant = make_tenant({"": 10**9, "workspace:prod/agent:refunds": 10**8})
    settings = tenant.settings(workspace="prod", dimensions={"team": "core"})
    agent = Agent(name="a", model=CyclesModel(ScriptedModel([reply()]), settings, model_name=MODEL))
    with cycles_run(subject={"agent": "refunds"}, dimensions={"customer": "c-9"}):
        await Runner.run(agent, "hello")
    assert tenant.spent("/workspace:prod/agent:refunds") == priced()
    with rc.CyclesClient(tenant.config) as client:
        (row,) = client.list_reservations().reservations
    assert row.subject.model_dump(exclude_none=True) == {
        "tenant": tenant.id,
        "workspace": "prod",
        "agent": "refunds",
        "dimensions": {"team": "core", "customer": "c-9"},
    }


async def test_a_stream_without_usage_commits_the_offline_count(tenant: Tenant) -> None:
    # Chat Completions streams from non-OpenAI endpoints report no usage unless asked to.
    inner = ScriptedModel([[assistant_message("forty-two")]])  # usage: all zero
    agent = Agent(name="a", model=CyclesModel(inner, tenant.settings(), model_name=MODEL))
    result = Runner.run_streamed(agent, "hello")
    async for _ in result.stream_events():
        pass
    expected = counted(request_messages(None, inner.calls[0].input), ["forty-two"])
    assert tenant.spent() == price(MODEL, expected).amount > 0
    assert tenant.reserved() == 0
