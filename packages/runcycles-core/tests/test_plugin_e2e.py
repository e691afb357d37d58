"""The plugin kit against a real server-lite: priced estimates, priced commits, tool gating."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runcycles_core as rc
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    commit_usage,
    estimate_for,
    model_guard,
    tool_guard,
)
from runcycles_core.pricing import UnknownModelError, Usage, price


@pytest.fixture
def settings(server: Any, tmp_path: Path) -> Iterator[CyclesSettings]:
    tenant = "kit" + secrets.token_hex(5)
    key = server.provision(tenant, {"": 100_000_000, "agent:bot": 50_000_000})
    cfg = rc.CyclesConfig(
        base_url=server.base_url, api_key=key, tenant=tenant, journal_dir=str(tmp_path / "j")
    )
    with rc.CyclesClient(cfg) as client:
        s = CyclesSettings(client=client, agent="bot", tool_budgets={"search": 1_000})
        yield s
        s.close()


def spent(settings: CyclesSettings, scope: str) -> int:
    client = settings.sync_client()
    tenant = client.config.tenant
    for b in client.get_balances(tenant=tenant).balances:
        if b.scope == f"tenant:{tenant}{scope}":
            return b.spent.amount if b.spent else 0
    raise AssertionError(scope)


def test_model_call_reserves_priced_estimate_and_commits_priced_usage(
    settings: CyclesSettings,
) -> None:
    call = ModelCall(model="gpt-4o", provider="openai", prompt="hello " * 50, max_output_tokens=200)
    expected_estimate = estimate_for(settings, call)
    g = model_guard(settings, call).reserve()
    assert g.response is not None and g.response.reserved is not None
    assert g.response.reserved.amount == expected_estimate
    usage = Usage(input_tokens=60, output_tokens=150, cache_read_tokens=20)
    result = commit_usage(g, settings, "gpt-4o", usage, provider="openai")
    assert result is not None and result.settled
    assert spent(settings, "/agent:bot") == price("gpt-4o", usage, "openai").amount
    detail = settings.sync_client().get_reservation(g.reservation_id or "")
    assert detail.committed is not None
    assert detail.committed.amount == price("gpt-4o", usage, "openai").amount


def test_unknown_model_follows_the_pricing_policy(settings: CyclesSettings) -> None:
    with pytest.raises(UnknownModelError, match="no-such-model"):
        model_guard(settings, ModelCall(model="no-such-model-xyz"))


def test_explicit_estimate_with_unknown_model_commits_the_estimate(
    settings: CyclesSettings,
) -> None:
    settings.estimate = 5_000
    g = model_guard(settings, ModelCall(model="my-private-model")).reserve()
    commit_usage(g, settings, "my-private-model", Usage(input_tokens=10, output_tokens=10))
    assert spent(settings, "/agent:bot") == 5_000


def test_tool_gating(settings: CyclesSettings) -> None:
    assert tool_guard(settings, "calculator") is None  # not budgeted: not gated
    g = tool_guard(settings, "search")
    assert g is not None
    assert g.spec.action.kind == "tool.search"
    with g:
        g.mark_ran()
    assert spent(settings, "/agent:bot") == 1_000


def test_settings_close_their_derived_clients(settings: CyclesSettings) -> None:
    import asyncio

    given = settings.sync_client()
    derived = settings.async_client()
    assert derived is not given
    asyncio.run(settings.aclose())
    assert derived._http.is_closed
    assert not given._http.is_closed  # the client the user passed stays theirs


def test_commit_usage_keeps_caller_metadata(settings: CyclesSettings) -> None:
    g = model_guard(settings, ModelCall(model="gpt-4o", input_tokens=10, max_output_tokens=10))
    g.reserve()
    commit_usage(
        g, settings, "gpt-4o", Usage(input_tokens=10, output_tokens=5), metadata={"run": "r1"}
    )
    assert g.settlement is not None
    assert g.settlement.settled
    detail = settings.sync_client().get_reservation(g.reservation_id or "")
    assert detail.committed_metadata is not None
    assert detail.committed_metadata["run"] == "r1"
    assert detail.committed_metadata["actual_source"] == "priced_usage"
