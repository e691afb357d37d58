"""Mapping code without a server: usage, keys, settings, retry advice, the supported range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import runcycles_openai_agents as plugin
from agents import Agent, ModelSettings, Runner
from agents.retry import ModelRetryAdviceRequest, ModelRetrySettings, RetryDecision
from agents.testing import ScriptedModel
from openai.types.responses import ResponseUsage
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from runcycles_openai_agents import BudgetExceededError, CyclesModel, RunScope, to_usage
from runcycles_openai_agents._supported import BELOW, OLDEST, REQUIREMENT

import runcycles_core as rc
from runcycles_core.lifecycle import stats
from runcycles_core.plugin import CyclesSettings, in_range
from runcycles_core.plugin import resolve_settings as kit_resolve
from runcycles_core.pricing import Usage

from .conftest import MODEL, Tenant
from .test_model import reply, sdk_usage


def test_public_surface() -> None:
    assert sorted(plugin.__all__) == sorted(
        [
            "SUPPORTED",
            "BudgetExceededError",
            "CyclesModel",
            "CyclesModelProvider",
            "CyclesRunHooks",
            "CyclesRunResultStreaming",
            "RunScope",
            "__version__",
            "cycles_run",
            "to_usage",
        ]
    )
    assert issubclass(BudgetExceededError, rc.BudgetExceededError)


def test_pyproject_declares_the_supported_range() -> None:
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text("utf-8")
    assert f'"{REQUIREMENT}"' in pyproject

    def ok(v: str) -> bool:
        return in_range(v, OLDEST, BELOW)

    assert ok(OLDEST) and not ok(BELOW) and not ok("0.20.9")
    assert ok("0.24.0") and ok("0.24.1rc1")


def test_sdk_usage_maps_to_core_usage() -> None:
    assert to_usage(sdk_usage(120, 40, cached=20, reasoning=10)) == Usage(
        input_tokens=120, output_tokens=40, cache_read_tokens=20, reasoning_tokens=10
    )
    responses = ResponseUsage(
        input_tokens=500,
        output_tokens=70,
        total_tokens=570,
        input_tokens_details=InputTokensDetails.model_validate(
            {"cached_tokens": 300, "cache_write_tokens": 100}
        ),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=30),
    )
    assert to_usage(responses) == Usage(
        input_tokens=500,
        output_tokens=70,
        cache_read_tokens=300,
        cache_write_tokens=100,
        reasoning_tokens=30,
    )


def test_inconsistent_or_missing_usage() -> None:
    # An adapter reporting more cached than input tokens still prices (clamped), and an
    # all-zero report counts as no report (the plugin then counts tokens offline).
    odd = sdk_usage(10, 5, cached=50, reasoning=9)
    assert to_usage(odd) == Usage(
        input_tokens=10, output_tokens=5, cache_read_tokens=10, reasoning_tokens=5
    )
    assert to_usage(sdk_usage(0, 0, cached=0, reasoning=0)) is None
    assert to_usage(None) is None


def test_run_scope_keys() -> None:
    scope = RunScope(run_id="r")
    first: list[Any] = []
    assert scope.model_key(first) == "r:turn1"
    scope.call_failed(first)
    assert scope.model_key(first) == "r:turn1:retry1"  # same input re-sent after a failure
    scope.call_failed(first)
    assert scope.model_key(first) == "r:turn1:retry2"
    assert scope.model_key(first) == "r:turn2"  # the retry succeeded: same input is a new turn
    assert scope.model_key([]) == "r:turn3"
    scope.call_failed([])  # not the last input: ignored
    assert scope.model_key() == "r:turn4"
    assert scope.tool_key("call_9") == "r:tool:call_9"
    assert scope.tool_key(None).startswith("r:tool:")


def test_settings_resolution() -> None:
    given = CyclesSettings(tenant="acme")

    def resolve_settings(s: CyclesSettings | None, f: dict[str, str]) -> CyclesSettings:
        return kit_resolve(s, f, denial_error=BudgetExceededError)

    resolved = resolve_settings(given, {})
    assert resolved.denial_error is BudgetExceededError
    assert given.denial_error is None  # the caller's object is left as given
    assert resolve_settings(None, {"tenant": "x"}).tenant == "x"
    with pytest.raises(TypeError):
        resolve_settings(given, {"tenant": "x"})


def test_a_model_without_a_name_needs_model_name() -> None:
    with pytest.raises(ValueError, match="model_name="):
        CyclesModel(ScriptedModel([]), CyclesSettings(tenant="t"))


async def test_a_denial_is_never_retried(make_tenant: Any) -> None:
    tenant: Tenant = make_tenant({"": 10})
    inner = ScriptedModel([reply()])
    model = CyclesModel(inner, tenant.settings(), model_name=MODEL)
    always = ModelRetrySettings(
        max_retries=3, policy=lambda _ctx: RetryDecision(retry=True, delay=0.0)
    )
    agent = Agent(name="a", model=model, model_settings=ModelSettings(retry=always))
    before = stats.snapshot()["denied"]
    with pytest.raises(BudgetExceededError) as info:
        await Runner.run(agent, "hello")
    assert stats.snapshot()["denied"] - before == 1  # one reservation attempt, no retries
    assert inner.calls == ()
    advice = model.get_retry_advice(
        ModelRetryAdviceRequest(error=info.value, attempt=1, stream=False)
    )
    assert advice is not None and advice.suggested is False
    assert advice.normalized is not None and advice.normalized.is_abort
