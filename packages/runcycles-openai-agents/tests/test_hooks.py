"""CyclesRunHooks and CyclesModelProvider on the SDK's ScriptedModel, against server-lite."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.exceptions import UserError
from agents.models.interface import Model, ModelProvider
from agents.testing import ModelStep, ScriptedModel, function_call
from runcycles_openai_agents import (
    BudgetExceededError,
    CyclesModel,
    CyclesModelProvider,
    CyclesRunHooks,
)

import runcycles_core as rc

from .conftest import MODEL, Tenant
from .test_model import priced, reply, sdk_usage


def named(steps: list[Any]) -> ScriptedModel:
    model = ScriptedModel(steps)
    model.model = MODEL  # type: ignore[attr-defined]  # as the SDK's OpenAI models expose it
    return model


async def test_hooks_reserve_and_commit_the_priced_usage(tenant: Tenant) -> None:
    hooks = CyclesRunHooks(tenant.settings())
    result = await Runner.run(Agent(name="a", model=named([reply()])), "hello", hooks=hooks)
    assert result.final_output == "hi"
    assert tenant.spent() == priced()
    assert tenant.reserved() == 0
    assert hooks.pending == 0


async def test_hooks_denial_propagates_before_the_model(make_tenant: Any) -> None:
    tenant = make_tenant({"": 10})
    inner = named([reply()])
    with pytest.raises(BudgetExceededError):
        await Runner.run(
            Agent(name="a", model=inner), "hello", hooks=CyclesRunHooks(tenant.settings())
        )
    assert inner.calls == ()


async def test_hooks_skip_agents_whose_model_is_already_budgeted(tenant: Tenant) -> None:
    settings = tenant.settings()
    model = CyclesModel(ScriptedModel([reply()]), settings, model_name=MODEL)
    await Runner.run(Agent(name="a", model=model), "hello", hooks=CyclesRunHooks(settings))
    assert tenant.spent() == priced()  # charged once, by the model wrapper


async def test_leftover_holds_are_released(tenant: Tenant) -> None:
    hooks = CyclesRunHooks(tenant.settings())
    agent = Agent(name="a", model=named([ModelStep(error=RuntimeError("provider down"))]))
    with pytest.raises(RuntimeError):
        await Runner.run(agent, "hello", hooks=hooks)
    # The SDK has no error hook: the hold stays until someone settles it…
    assert hooks.pending == 1
    assert tenant.reserved() > 0
    assert await hooks.release_pending() == 1
    assert tenant.reserved() == 0
    assert tenant.spent() == 0
    # …which CyclesRunHooks.run does by itself.
    agent = Agent(name="a", model=named([ModelStep(error=RuntimeError("provider down"))]))
    with pytest.raises(RuntimeError):
        await hooks.run(agent, "hello")
    assert hooks.pending == 0
    assert tenant.reserved() == 0


class PlainDenied(rc.BudgetExceededError):
    """A user-chosen denial type outside the SDK's exception family."""


async def test_tool_denial_is_unwrapped_from_the_sdks_user_error(tenant: Tenant) -> None:
    ran: list[str] = []

    @function_tool
    def lookup() -> str:
        ran.append("lookup")
        return "42"

    def agent() -> Agent[Any]:
        steps = [[function_call("lookup", "{}", call_id="call_1")], reply()]
        return Agent(name="a", model=named(steps), tools=[lookup])

    hooks = CyclesRunHooks(
        tenant.settings(tool_budgets={"lookup": 10**15}, denial_error=PlainDenied)
    )
    # The SDK wraps what a tool hook raises in a UserError (cause: the denial)…
    with pytest.raises(UserError) as wrapped:
        await Runner.run(agent(), "hello", hooks=hooks)
    assert isinstance(wrapped.value.__cause__, PlainDenied)
    # …and CyclesRunHooks.run hands the caller the denial itself.
    with pytest.raises(PlainDenied):
        await hooks.run(agent(), "hello")
    assert ran == []
    assert tenant.reserved() == 0


async def test_tool_budget_committed_as_its_kind(tenant: Tenant) -> None:
    @function_tool
    def lookup() -> str:
        return "42"

    ask = ModelStep(output=[function_call("lookup", "{}", call_id="call_1")], usage=sdk_usage())
    agent = Agent(name="a", model=named([ask, reply()]), tools=[lookup])
    await CyclesRunHooks(tenant.settings(tool_budgets={"*": 5_000})).run(agent, "hello")
    assert tenant.spent() == 2 * priced() + 5_000
    with rc.CyclesClient(tenant.config) as client:
        kinds = sorted(r.action.kind for r in client.list_reservations().reservations)
    assert kinds == ["llm.completion", "llm.completion", "tool.lookup"]


class ScriptedProvider(ModelProvider):
    """A provider handing out nameless test models (like a custom provider would)."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    def get_model(self, model_name: str | None) -> Model:
        self.asked.append(model_name)
        return ScriptedModel([reply()])


async def test_provider_wraps_models_named_by_string(tenant: Tenant) -> None:
    inner = ScriptedProvider()
    provider = CyclesModelProvider(inner, tenant.settings())
    agent = Agent(name="a", model=MODEL)
    await Runner.run(agent, "hello", run_config=RunConfig(model_provider=provider))
    assert inner.asked == [MODEL]
    assert tenant.spent() == priced()
    wrapped = provider.get_model(MODEL)
    assert isinstance(wrapped, CyclesModel)
    assert wrapped.model_name == MODEL


def test_default_provider_wraps_the_sdks_openai_models(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")  # building a client sends nothing
    model = CyclesModelProvider(settings=tenant.settings()).get_model("gpt-4o")
    assert isinstance(model, CyclesModel)
    assert (model.model_name, model.provider) == ("gpt-4o", "openai")
    assert type(model.inner).__module__.startswith("agents.models.openai")
