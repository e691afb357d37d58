"""pricing: exact µ¢ from the bundled genai-prices snapshot, estimates, policies, no network."""

from __future__ import annotations

import hashlib
import importlib.machinery
import math
import socket
import sys
import textwrap
import types
from datetime import datetime, timezone
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from genai_prices.data import providers
from genai_prices.types import TieredPrices
from hypothesis import given, settings
from hypothesis import strategies as st

from runcycles_core import _tokens, pricing
from runcycles_core._tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    approximate_tokens,
)
from runcycles_core.pricing import (
    DEFAULT_OUTPUT_TOKENS,
    MICROCENTS_PER_USD,
    ModelPrice,
    Pricing,
    UnknownModelError,
    UnknownModelPolicy,
    Usage,
    usd_to_microcents,
)
from runcycles_server_lite.testing import run, start_timeout

AT = datetime(2026, 11, 1, tzinfo=timezone.utc)


def snapshot_rates(provider_id: str, model_id: str) -> Any:
    """The snapshot's own ModelPrice for a model, read straight from genai-prices' data."""
    provider = next(p for p in providers if p.id == provider_id)
    model = next(m for m in provider.models if m.id == model_id)
    return model.get_prices(AT)


def rate(value: Decimal | TieredPrices | None, fallback: Decimal, total_input: int) -> Decimal:
    if value is None:
        return fallback
    if isinstance(value, TieredPrices):
        # Cliff tiers: crossing a threshold prices every token at that tier's rate.
        chosen = value.base
        for tier in value.tiers:
            if total_input > tier.start:
                chosen = tier.price
        return chosen
    return value


def expected_microcents(provider_id: str, model_id: str, usage: Usage) -> int:
    """µ¢ computed independently of pricing.py from the snapshot's per-token rates."""
    rates = snapshot_rates(provider_id, model_id)
    n = usage.input_tokens
    input_rate = rate(rates.input_mtok, Decimal(0), n)
    output_rate = rate(rates.output_mtok, Decimal(0), n)
    usd = (
        (usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens) * input_rate
        + usage.cache_read_tokens * rate(rates.cache_read_mtok, input_rate, n)
        + usage.cache_write_tokens * rate(rates.cache_write_mtok, input_rate, n)
        + (usage.output_tokens - usage.reasoning_tokens) * output_rate
        + usage.reasoning_tokens * rate(rates.output_reasoning_mtok, output_rate, n)
    ) / Decimal(1_000_000)
    return math.ceil(usd * MICROCENTS_PER_USD)


USAGE = Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=2_000)


@pytest.mark.parametrize(
    ("model", "provider_id", "model_id"),
    [
        ("gpt-4o", "openai", "gpt-4o"),
        ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("gemini-2.5-flash", "google", "gemini-2.5-flash"),
        ("gemini-2.0-flash", "google", "gemini-2.0-flash"),
    ],
)
def test_exact_microcents_match_snapshot_rates(model: str, provider_id: str, model_id: str) -> None:
    result = pricing.price(model, USAGE, at=AT)
    assert result.amount == expected_microcents(provider_id, model_id, USAGE)
    assert result.amount > 0
    assert result.unit == "USD_MICROCENTS"
    assert result.source.model_id == model_id
    assert result.source.provider_id == provider_id


def test_gpt_4o_anchor_from_published_rates() -> None:
    # $2.50 / $10 per 1M tokens = 250 / 1,000 µ¢ per token (official-clients-lessons §4).
    result = pricing.price("gpt-4o", Usage(input_tokens=1_000, output_tokens=500), at=AT)
    assert result.amount == 1_000 * 250 + 500 * 1_000
    assert result.usd == Decimal("0.0075")


def test_tiered_long_context_price_follows_snapshot() -> None:
    usage = Usage(input_tokens=250_000, output_tokens=1_000)
    result = pricing.price("claude-sonnet-4-5", usage, at=AT)
    assert result.amount == expected_microcents("anthropic", "claude-sonnet-4-5", usage)
    short = pricing.price("claude-sonnet-4-5", Usage(input_tokens=150_000, output_tokens=1_000))
    # Above 200k every token costs the higher tier rate, so per-input-token price jumps.
    assert result.amount / 250_000 > short.amount / 150_000


def test_cache_read_and_write_priced_at_their_own_rates() -> None:
    model = "claude-sonnet-4-5"
    plain = pricing.price(model, Usage(input_tokens=10_000, output_tokens=100), at=AT)
    read = pricing.price(
        model, Usage(input_tokens=10_000, output_tokens=100, cache_read_tokens=4_000), at=AT
    )
    write = pricing.price(
        model, Usage(input_tokens=10_000, output_tokens=100, cache_write_tokens=4_000), at=AT
    )
    rates = snapshot_rates("anthropic", model)
    base_in = rates.input_mtok.base
    # Difference is exactly 4,000 tokens x (cache rate - input rate), in µ¢ (= USD/M x 100).
    assert read.amount - plain.amount == 4_000 * (rates.cache_read_mtok.base - base_in) * 100
    assert write.amount - plain.amount == 4_000 * (rates.cache_write_mtok.base - base_in) * 100
    assert read.amount < plain.amount < write.amount


def test_reasoning_tokens_use_reasoning_rate_when_snapshot_has_one() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=2_000, reasoning_tokens=800)
    result = pricing.price("sonar-deep-research", usage, provider="perplexity", at=AT)
    assert result.amount == expected_microcents("perplexity", "sonar-deep-research", usage)
    without = pricing.price(
        "sonar-deep-research", Usage(input_tokens=1_000, output_tokens=2_000), "perplexity", at=AT
    )
    rates = snapshot_rates("perplexity", "sonar-deep-research")
    assert rates.output_reasoning_mtok != rates.output_mtok
    assert (
        result.amount - without.amount
        == 800 * (rates.output_reasoning_mtok - rates.output_mtok) * 100
    )


def test_reasoning_tokens_are_not_double_counted() -> None:
    # gpt-4o/o3 have no separate reasoning rate: reasoning is part of output_tokens, same price.
    for model in ("o3", "gpt-4o"):
        plain = pricing.price(model, Usage(input_tokens=100, output_tokens=1_000), at=AT)
        with_reasoning = pricing.price(
            model, Usage(input_tokens=100, output_tokens=1_000, reasoning_tokens=900), at=AT
        )
        assert with_reasoning.amount == plain.amount


@pytest.mark.parametrize(
    "ref", ["gpt-4o", "GPT-4o", "openai:gpt-4o", "openai/gpt-4o", "gpt-4o-2024-08-06"]
)
def test_model_reference_resolution_is_tolerant(ref: str) -> None:
    result = pricing.price(ref, USAGE, at=AT)
    assert result.amount == expected_microcents("openai", "gpt-4o", USAGE)
    assert result.source.model_id == "gpt-4o"
    assert result.model == ref


def test_compact_dated_and_prefixed_anthropic_refs() -> None:
    for ref in ("claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"):
        assert pricing.price(ref, USAGE, at=AT).source.model_id == "claude-sonnet-4-5"


def test_explicit_provider_is_used() -> None:
    assert pricing.price("gpt-4o", USAGE, provider="azure", at=AT).source.provider_id == "azure"


def test_provenance_metadata() -> None:
    result = pricing.price("gpt-4o", USAGE, at=AT)
    meta = result.metadata()
    assert meta["price_source"] == "genai-prices"
    assert meta["price_source_version"] == version("genai-prices")
    assert meta["price_model_id"] == "gpt-4o"
    assert meta["priced_at"] == AT.isoformat()
    # A real calendar date, from the snapshot itself.
    datetime.fromisoformat(meta["price_latest_price_date"])
    assert all(isinstance(v, str) for v in meta.values())


def test_microcent_rounding_is_up() -> None:
    assert usd_to_microcents(Decimal("0.000000015")) == 2  # 1.5 µ¢ -> 2
    assert usd_to_microcents(Decimal("0.00000001")) == 1  # exact 1 µ¢ stays 1
    assert usd_to_microcents(Decimal("0.0000000100001")) == 2
    assert usd_to_microcents(Decimal(0)) == 0
    cheap = Pricing(
        overrides={"tiny": ModelPrice(input_per_mtok_usd="0.015", output_per_mtok_usd=1)}
    )
    # 1 token x $0.015/M = 1.5 µ¢: never under-charge.
    assert cheap.price("tiny", Usage(input_tokens=1)).amount == 2


def test_unknown_model_raises_naming_it() -> None:
    with pytest.raises(UnknownModelError, match="no-such-model-xyz") as info:
        pricing.price("no-such-model-xyz", USAGE)
    assert info.value.model == "no-such-model-xyz"
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownModelError, match="no-such-model-xyz"):
        pricing.estimate("no-such-model-xyz", input_tokens=10, max_output_tokens=10)


def test_snapshot_entry_without_token_prices_is_unknown_not_free() -> None:
    # github-copilot lists gpt-4o as subscription-included with an empty price: never $0.
    with pytest.raises(UnknownModelError, match="without token prices"):
        pricing.price("gpt-4o", USAGE, provider="github-copilot", at=AT)


def test_fallback_price_applies_to_unknown_models() -> None:
    fallback = ModelPrice(input_per_mtok_usd=5, output_per_mtok_usd=20)
    p = Pricing(unknown_model=UnknownModelPolicy.fallback_to(fallback))
    result = p.price("my-private-model", Usage(input_tokens=1_000, output_tokens=100))
    assert result.amount == 1_000 * 500 + 100 * 2_000
    assert result.source.name == "fallback"
    assert result.metadata()["price_source"] == "fallback"
    # Known models still come from the snapshot.
    assert p.price("gpt-4o", USAGE, at=AT).source.name == "genai-prices"


@pytest.mark.parametrize(("inp", "out"), [(0, 1), (1, 0), (0, 0)])
def test_fallback_price_can_never_be_free(inp: int, out: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        UnknownModelPolicy.fallback_to(ModelPrice(inp, out))


def test_overrides_win_over_snapshot_and_tolerate_prefixes() -> None:
    custom = ModelPrice(
        input_per_mtok_usd=1,
        output_per_mtok_usd=2,
        cache_read_per_mtok_usd="0.5",
        reasoning_per_mtok_usd=4,
    )
    p = Pricing(overrides={"GPT-4o": custom, "my-model": custom})
    usage = Usage(
        input_tokens=1_000, output_tokens=300, cache_read_tokens=200, reasoning_tokens=100
    )
    want = 800 * 100 + 200 * 50 + 200 * 200 + 100 * 400
    for ref in ("gpt-4o", "openai:gpt-4o", "my-model"):
        result = p.price(ref, usage)
        assert result.amount == want
        assert result.source.name == "override"
    # The default instance is untouched.
    assert pricing.price("gpt-4o", usage, at=AT).source.name == "genai-prices"


def test_usage_validation_and_addition() -> None:
    with pytest.raises(ValueError, match="cache"):
        Usage(input_tokens=10, cache_read_tokens=6, cache_write_tokens=5)
    with pytest.raises(ValueError, match="reasoning"):
        Usage(output_tokens=1, reasoning_tokens=2)
    with pytest.raises(ValueError, match="non-negative"):
        Usage(input_tokens=-1)
    total = Usage(1, 2, 1, 0, 1) + Usage(10, 20, 0, 5, 3)
    assert total == Usage(11, 22, 1, 5, 4)


def test_approximate_token_count() -> None:
    assert approximate_tokens("") == 0
    assert approximate_tokens("abcd") == 1
    assert approximate_tokens("abcde") == 2
    assert approximate_tokens("日本語") == 3  # dense scripts: one token per character
    assert approximate_tokens("abcdefgh日本 é") == 3 + 3  # ceil(9 ascii / 4) + 3 non-ascii
    p = Pricing(token_counter=approximate_tokens)
    messages = [{"role": "user", "content": "abcdefgh"}, {"role": "system", "content": "x"}]
    # strings: "user"(1) + "abcdefgh"(2) + "system"(2) + "x"(1)
    want = REPLY_PRIMING_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + 1 + 2 + 2 + 1
    assert p.count_input_tokens(messages=messages) == want
    est = p.estimate("gpt-4o", messages=messages, max_output_tokens=10)
    assert est.input_tokens == want
    assert est.input_token_method == "approximate"


def test_tiktoken_is_used_only_when_its_data_is_cached_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in tiktoken: importable, but counting needs its cached BPE file, which tiktoken
    # would otherwise download. We must fall back rather than trigger that download.
    fake = types.ModuleType("tiktoken")
    fake.__spec__ = importlib.machinery.ModuleSpec("tiktoken", None)
    loaded: list[str] = []

    class Encoding:
        def encode(self, text: str, disallowed_special: object = ()) -> list[int]:
            return [0] * len(text.split())

    def get_encoding(name: str) -> Encoding:
        loaded.append(name)
        return Encoding()

    fake.get_encoding = get_encoding  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert _tokens._offline_tiktoken() is None
    assert loaded == []
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"cached")
    counter = _tokens._offline_tiktoken()
    assert counter is not None
    assert counter("three words here") == 3
    assert loaded == ["o200k_base"]


def test_custom_token_counter_is_used() -> None:
    p = Pricing(token_counter=lambda text: 7 * len(text))
    est = p.estimate("gpt-4o", prompt="abc", max_output_tokens=0)
    assert est.input_tokens == 21
    assert est.input_token_method == "tokenizer"


def test_estimate_formula_and_buffer_multiplies() -> None:
    one = pricing.estimate("gpt-4o", input_tokens=1_000, max_output_tokens=500, buffer=1, at=AT)
    assert one.amount == one.base.amount == 750_000
    default = pricing.estimate("gpt-4o", input_tokens=1_000, max_output_tokens=500, at=AT)
    assert default.buffer == Decimal("1.2")
    assert default.amount == 900_000
    odd = pricing.estimate("gpt-4o", input_tokens=1, max_output_tokens=0, buffer="1.3", at=AT)
    assert odd.amount == math.ceil(250 * Decimal("1.3"))  # 325: buffer on exact, then round up
    with pytest.raises(ValueError, match="buffer"):
        pricing.estimate("gpt-4o", input_tokens=1, max_output_tokens=1, buffer="0.9")
    assert default.metadata()["estimate_buffer"] == "1.2"


def test_estimate_default_output_caps() -> None:
    est = pricing.estimate("gpt-4o", input_tokens=0, buffer=1)
    assert est.output_tokens == 16_384
    assert pricing.estimate("claude-sonnet-4-5", input_tokens=0).output_tokens == 64_000
    # A snapshot model without a table entry gets the generous default.
    sonar = pricing.estimate("sonar-deep-research", provider="perplexity", input_tokens=0)
    assert sonar.output_tokens == DEFAULT_OUTPUT_TOKENS
    p = Pricing(
        overrides={"mine": ModelPrice(1, 1, max_output_tokens=77)},
        output_caps={"gpt-4o": 1_000},
        default_output_tokens=99,
    )
    assert p.estimate("mine", input_tokens=0).output_tokens == 77
    assert p.estimate("gpt-4o", input_tokens=0).output_tokens == 1_000
    assert p.estimate("perplexity:sonar-deep-research", input_tokens=0).output_tokens == 99


def test_estimate_requires_exactly_one_input_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        pricing.estimate("gpt-4o")
    with pytest.raises(ValueError, match="exactly one"):
        pricing.estimate("gpt-4o", input_tokens=1, prompt="x")


@settings(max_examples=200, deadline=None)
@given(
    model=st.sampled_from(["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "o3"]),
    input_tokens=st.integers(0, 300_000),
    max_tokens=st.integers(0, 50_000),
    data=st.data(),
)
def test_estimate_covers_any_response_within_max_tokens(
    model: str, input_tokens: int, max_tokens: int, data: st.DataObject
) -> None:
    est = pricing.estimate(model, input_tokens=input_tokens, max_output_tokens=max_tokens, at=AT)
    out = data.draw(st.integers(0, max_tokens))
    cached = data.draw(st.integers(0, input_tokens))
    actual = Usage(
        input_tokens=input_tokens,
        output_tokens=out,
        cache_read_tokens=cached,
        reasoning_tokens=data.draw(st.integers(0, out)),
    )
    assert est.amount >= pricing.price(model, actual, at=AT).amount


def test_estimate_with_cache_writes_covers_cache_write_response() -> None:
    est = pricing.estimate(
        "claude-sonnet-4-5", input_tokens=10_000, max_output_tokens=100, cache_write_tokens=10_000
    )
    actual = Usage(input_tokens=10_000, output_tokens=100, cache_write_tokens=10_000)
    assert est.base.amount == pricing.price("claude-sonnet-4-5", actual).amount
    assert est.amount > est.base.amount


def test_custom_genai_snapshot_does_not_change_our_prices() -> None:
    # genai-prices' UpdatePrices installs fetched data with set_custom_snapshot(); we ignore it.
    from genai_prices.data_snapshot import DataSnapshot, set_custom_snapshot

    before = pricing.price("gpt-4o", USAGE, at=AT).amount
    set_custom_snapshot(DataSnapshot(providers=[], from_auto_update=True))
    try:
        assert pricing.price("gpt-4o", USAGE, at=AT).amount == before
    finally:
        set_custom_snapshot(None)


def test_no_network_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # Drop our caches so the snapshot and provenance are rebuilt under the patch.
    for cached in (pricing._snapshot, pricing._latest_price_date, pricing._genai_prices_version):
        cached.cache_clear()
    p = Pricing()
    assert p.price("claude-sonnet-4-5", USAGE, at=AT).amount == expected_microcents(
        "anthropic", "claude-sonnet-4-5", USAGE
    )
    assert p.estimate("gpt-4o", prompt="hello " * 50).amount > 0


def test_no_network_at_import_or_call_in_fresh_process() -> None:
    script = textwrap.dedent(
        """
        import socket
        def refuse(*a, **k):
            raise SystemExit("network access attempted")
        class Refusing(socket.socket):
            def __init__(self, *a, **k):
                refuse()
        socket.socket = Refusing
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from runcycles_core import pricing
        from runcycles_core.pricing import Usage
        from datetime import datetime, timezone
        at = datetime(2026, 11, 1, tzinfo=timezone.utc)
        p = pricing.price("gpt-4o", Usage(input_tokens=1000, output_tokens=500), at=at)
        e = pricing.estimate("claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
        print(p.amount, e.amount > 0)
        """
    )
    done = run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=start_timeout()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["750000", "True"]
