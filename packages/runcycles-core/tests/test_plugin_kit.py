"""The plugin kit's pure parts: usage normalisation, offline counts, the rule's plan, the
supported-range check. (Settlement against a real server is covered by the contract suite.)"""

from __future__ import annotations

import asyncio
import warnings

import pytest

from runcycles_core._kit_settle import _plan
from runcycles_core.errors import BudgetExceededError
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    check_supported,
    counted_usage,
    in_range,
    normalize_usage,
    resolve_settings,
)
from runcycles_core.pricing import Usage, default_pricing


class MyDenial(BudgetExceededError):
    pass


def test_normalize_usage_clamps_and_treats_zero_as_no_usage() -> None:
    assert normalize_usage(10, 5, cache_read_tokens=50, reasoning_tokens=9) == Usage(
        input_tokens=10, output_tokens=5, cache_read_tokens=10, reasoning_tokens=5
    )
    assert normalize_usage(10, 1, cache_read_tokens=6, cache_write_tokens=9).cache_write_tokens == 4  # type: ignore[union-attr]
    assert normalize_usage(None, -3) is None
    assert normalize_usage(0, 0) is None
    assert normalize_usage(True, 2.5) is None  # not ints


def test_received_counts_text_and_at_least_one_token_per_chunk() -> None:
    tc = default_pricing().token_counter
    r = Received()
    for part in ["The", " an", "swer"]:
        r.add(part)
    assert r.output_tokens(default_pricing()) == max(3, tc("The answer"))
    many = Received()
    for _ in range(100):
        many.add("a")
    # 100 chunks of one character are at least 100 tokens, however the text tokenizes.
    assert many.output_tokens(default_pricing()) == max(100, tc("a" * 100))
    assert not Received()


def test_the_plan_follows_the_four_rules() -> None:
    s = CyclesSettings()
    call = ModelCall(model="gpt-4o", prompt="What is six times seven?")
    got = Received()
    got.add("42")
    usage = Usage(input_tokens=7, output_tokens=1)
    assert _plan(s, call, got, usage, None).usage == usage  # reported usage wins
    a = _plan(s, call, got, None, None)
    assert (a.outcome, a.counted) == ("no_usage", True)
    assert a.usage == counted_usage(s, call, got)
    b = _plan(s, call, got, None, GeneratorExit())
    assert (b.outcome, b.usage) == ("stopped", counted_usage(s, call, got))
    c = _plan(s, call, Received(), None, asyncio.CancelledError())
    assert c.outcome == "cancelled" and c.usage is not None
    assert c.usage.output_tokens == 0 and c.usage.input_tokens > 0
    d = _plan(s, call, got, None, RuntimeError("boom"))
    assert (d.outcome, d.counted) == ("failed", True)
    assert _plan(s, call, Received(), None, RuntimeError("boom")).release
    unknown = _plan(s, ModelCall(model="gpt-4o"), Received(), None, None)
    assert unknown.estimate


def test_resolve_settings_installs_the_plugin_denial_on_a_copy() -> None:
    given = CyclesSettings(tenant="acme")
    resolved = resolve_settings(given, {}, denial_error=MyDenial)
    assert resolved.denial_error is MyDenial and given.denial_error is None
    assert resolve_settings(None, {"tenant": "x"}, denial_error=MyDenial).tenant == "x"
    with pytest.raises(TypeError):
        resolve_settings(given, {"tenant": "x"}, denial_error=MyDenial)


def test_supported_range_check_warns_naming_the_range() -> None:
    assert in_range("1.2.3", "1.0.0", "2") and not in_range("2.0", "1.0.0", "2")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        installed = check_supported("runcycles-x", "pytest", "0.0.1", "0.0.2")
    assert installed is not None
    assert any(">=0.0.1,<0.0.2" in str(w.message) for w in seen)
    assert check_supported("runcycles-x", "no-such-distribution-xyz", "1", "2") is None
