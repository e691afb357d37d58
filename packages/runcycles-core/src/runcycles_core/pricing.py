"""Token usage to ``USD_MICROCENTS``, and pre-call cost estimates.

Prices come from the snapshot bundled inside the installed ``genai-prices`` package. We build our
own snapshot object from the bundled data instead of calling ``genai_prices.calc_price``, so an
application that starts genai-prices' optional background updater (``UpdatePrices``) cannot make
our numbers drift or depend on the network: nothing here does network I/O, at import or at call.

Money is integral: 1 USD = 100,000,000 µ¢ (``USD_MICROCENTS``). Every price is computed exactly in
``Decimal`` and converted to µ¢ **once, rounding up** (ceiling), so we never under-charge and the
amount is at most 1 µ¢ above the exact price. Estimates apply the buffer to the exact price and then
round up once.

Token conventions of :class:`Usage` (those of genai-prices):

* ``input_tokens`` counts **all** prompt tokens, including ``cache_read_tokens`` and
  ``cache_write_tokens`` (which are subsets priced at their own rates). Anthropic reports
  ``input_tokens`` excluding cache tokens: pass ``input_tokens + cache_creation_input_tokens +
  cache_read_input_tokens`` there.
* ``output_tokens`` counts **all** generated tokens, including ``reasoning_tokens`` (OpenAI's
  ``completion_tokens`` and Anthropic's ``output_tokens`` already do). Reasoning tokens are
  priced at the model's reasoning rate where the snapshot has one, else at the output rate; they
  are never added on top of ``output_tokens``. Gemini reports thoughts separately: add
  ``thoughts_token_count`` into ``output_tokens``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timezone
from decimal import Decimal
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version
from typing import TYPE_CHECKING, Any, Literal

from runcycles_core._tokens import (
    TokenCounter,
    approximate_tokens,
    count_message_tokens,
    default_token_counter,
)
from runcycles_core.amounts import MICROCENTS_PER_USD as _MICROCENTS_PER_USD

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, Provider

__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_OUTPUT_CAPS",
    "DEFAULT_OUTPUT_TOKENS",
    "MICROCENTS_PER_USD",
    "PRICE_SOURCE",
    "USD_MICROCENTS",
    "Estimate",
    "ModelPrice",
    "Price",
    "PriceSource",
    "Pricing",
    "UnknownModelError",
    "UnknownModelPolicy",
    "Usage",
    "default_pricing",
    "estimate",
    "price",
    "set_default_pricing",
    "usd_to_microcents",
]

USD_MICROCENTS = "USD_MICROCENTS"
MICROCENTS_PER_USD = _MICROCENTS_PER_USD  # one definition, in .amounts
PRICE_SOURCE = "genai-prices"
DEFAULT_BUFFER = Decimal("1.2")

DEFAULT_OUTPUT_TOKENS = 16_384
"""Output cap assumed when neither the request nor :data:`DEFAULT_OUTPUT_CAPS` gives one."""

DEFAULT_OUTPUT_CAPS: Mapping[str, int] = {
    # Provider-documented maximum output tokens, matched by longest prefix of the model id. Used
    # only when the request sets no max_tokens: the provider may then generate up to this many.
    "gpt-4o": 16_384,
    "gpt-4.1": 32_768,
    "gpt-5": 128_000,
    "o1": 100_000,
    "o3": 100_000,
    "o4-mini": 100_000,
    "claude-opus-4": 32_000,
    "claude-sonnet-4": 64_000,
    "claude-haiku-4": 64_000,
    "claude-3-7-sonnet": 64_000,
    "claude-3-5-haiku": 8_192,
    "claude-3-5-sonnet": 8_192,
    "gemini-2.5": 65_536,
    "gemini-2.0": 8_192,
    "gemini-1.5": 8_192,
}

_MTOK = Decimal(1_000_000)

Rate = Decimal | int | float | str
"""A USD-per-million-tokens rate; floats are converted through ``str`` so 0.1 stays 0.1."""


class UnknownModelError(ValueError):
    """No price is known for a model and the unknown-model policy is to raise."""

    def __init__(self, model: str, provider: str | None = None, reason: str | None = None) -> None:
        self.model = model
        self.provider = provider
        where = f" (provider {provider!r})" if provider else ""
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"no price known for model {model!r}{where}{detail}; add a per-model override or "
            "configure UnknownModelPolicy.fallback_to(...)"
        )


def _dec(value: Rate, name: str) -> Decimal:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not bool")
    result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not result.is_finite() or result < 0:
        raise ValueError(f"{name} must be a finite, non-negative rate, got {value!r}")
    return result


def usd_to_microcents(usd: Decimal) -> int:
    """Exact USD to integral µ¢, rounding any fractional µ¢ **up**."""
    return math.ceil(usd * MICROCENTS_PER_USD)


@dataclass(frozen=True)
class Usage:
    """Token usage of one call. See the module docstring for what each count includes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{f.name} must be a non-negative int, got {value!r}")
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "cache_read_tokens + cache_write_tokens cannot exceed input_tokens "
                "(input_tokens counts all prompt tokens, cached ones included)"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                "reasoning_tokens cannot exceed output_tokens "
                "(output_tokens counts all generated tokens, reasoning included)"
            )

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages (streaming chunks, multi-call actions)."""
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class ModelPrice:
    """A user-supplied price in USD per million tokens (for overrides and the fallback policy).

    Cache and reasoning rates default to the input and output rates respectively.
    ``max_output_tokens`` is the output cap estimates assume when the request sets none.
    """

    input_per_mtok_usd: Rate
    output_per_mtok_usd: Rate
    cache_read_per_mtok_usd: Rate | None = None
    cache_write_per_mtok_usd: Rate | None = None
    reasoning_per_mtok_usd: Rate | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_usd") and value is not None:
                object.__setattr__(self, f.name, _dec(value, f.name))
        if self.max_output_tokens is not None and self.max_output_tokens <= 0:
            raise ValueError("max_output_tokens must be positive")

    def _rate(self, name: str, default: str) -> Decimal:
        value = getattr(self, name)
        return Decimal(value if value is not None else getattr(self, default))

    def usd(self, usage: Usage) -> Decimal:
        """Exact USD price of ``usage`` at these rates."""
        plain_input = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        plain_output = usage.output_tokens - usage.reasoning_tokens
        total = (
            plain_input * self._rate("input_per_mtok_usd", "input_per_mtok_usd")
            + usage.cache_read_tokens * self._rate("cache_read_per_mtok_usd", "input_per_mtok_usd")
            + usage.cache_write_tokens
            * self._rate("cache_write_per_mtok_usd", "input_per_mtok_usd")
            + plain_output * self._rate("output_per_mtok_usd", "output_per_mtok_usd")
            + usage.reasoning_tokens * self._rate("reasoning_per_mtok_usd", "output_per_mtok_usd")
        )
        return total / _MTOK


@dataclass(frozen=True)
class UnknownModelPolicy:
    """What to do for a model with no known price: raise (default), or use a fallback price.

    There is deliberately no "price it at $0" option.
    """

    fallback: ModelPrice | None = None

    def __post_init__(self) -> None:
        if self.fallback is not None and (
            Decimal(self.fallback.input_per_mtok_usd) <= 0
            or Decimal(self.fallback.output_per_mtok_usd) <= 0
        ):
            raise ValueError("a fallback price must charge a positive input and output rate")

    @classmethod
    def raise_error(cls) -> UnknownModelPolicy:
        """Raise :class:`UnknownModelError` naming the model (the default)."""
        return cls()

    @classmethod
    def fallback_to(cls, price: ModelPrice) -> UnknownModelPolicy:
        """Price unknown models at ``price`` (both rates must be positive)."""
        return cls(fallback=price)


@dataclass(frozen=True)
class PriceSource:
    """Where a price came from; callers put :meth:`metadata` into commit metadata."""

    name: Literal["genai-prices", "override", "fallback"]
    version: str | None = None
    """The genai-prices package version. genai-prices ships its data inside each release and
    records no snapshot date, so this version *is* the data version. None for overrides/fallback."""
    latest_price_date: date | None = None
    """Start date of the newest dated price entry in the snapshot (may be a scheduled change)."""
    model_id: str | None = None
    """The snapshot's id of the matched model, or the override key."""
    provider_id: str | None = None

    def metadata(self) -> dict[str, str]:
        """Flat string metadata for a commit or event, omitting unknown fields."""
        items = {
            "price_source": self.name,
            "price_source_version": self.version,
            "price_latest_price_date": (
                self.latest_price_date.isoformat() if self.latest_price_date else None
            ),
            "price_model_id": self.model_id,
            "price_provider_id": self.provider_id,
        }
        return {key: value for key, value in items.items() if value is not None}


@dataclass(frozen=True)
class Price:
    """The price of a usage, in integral µ¢, with its provenance."""

    model: str
    usage: Usage
    usd: Decimal
    """Exact USD price before rounding."""
    amount: int
    """``usd`` in µ¢, rounded up."""
    source: PriceSource
    priced_at: datetime
    """The instant whose prices applied (snapshot prices can change on dated boundaries)."""
    unit: str = USD_MICROCENTS

    def metadata(self) -> dict[str, str]:
        """Provenance for commit metadata: source, data version, matched model, priced_at."""
        return {**self.source.metadata(), "priced_at": self.priced_at.isoformat()}


@dataclass(frozen=True)
class Estimate:
    """A pre-call reservation amount: priced input + priced max output, times a buffer."""

    model: str
    input_tokens: int
    output_tokens: int
    """The output cap priced (the request's max tokens, else the model default)."""
    input_token_method: Literal["given", "tokenizer", "approximate"]
    buffer: Decimal
    base: Price
    """The unbuffered price of ``input_tokens`` + ``output_tokens``."""
    amount: int
    """``base.usd * buffer`` in µ¢, rounded up."""
    unit: str = USD_MICROCENTS

    @property
    def source(self) -> PriceSource:
        return self.base.source

    def metadata(self) -> dict[str, str]:
        return {**self.base.metadata(), "estimate_buffer": str(self.buffer)}


@dataclass(frozen=True)
class _Resolved:
    source: PriceSource
    usd: Callable[[Usage, datetime], Decimal]
    max_output_tokens: int | None = None


def _flat_usd(model_price: ModelPrice) -> Callable[[Usage, datetime], Decimal]:
    def usd(usage: Usage, _at: datetime) -> Decimal:
        return model_price.usd(usage)

    return usd


@functools.cache
def _snapshot() -> DataSnapshot:
    # Our own snapshot over the bundled data: immune to genai_prices.UpdatePrices swapping in
    # fetched prices via set_custom_snapshot().
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


@functools.cache
def _genai_prices_version() -> str | None:
    try:
        return _package_version("genai-prices")
    except PackageNotFoundError:  # pragma: no cover - a vendored or frozen copy
        return None


def _constraint_dates(model: ModelInfo) -> Iterator[date]:
    conditionals: Iterable[Any] = model.prices if isinstance(model.prices, list) else ()
    for item in [*conditionals, *(model.price_variants or ())]:
        start = getattr(item.constraint, "start_date", None)
        if isinstance(start, date):
            yield start


@functools.cache
def _latest_price_date() -> date | None:
    dates = [d for p in _snapshot().providers for m in p.models for d in _constraint_dates(m)]
    return max(dates, default=None)


def _candidates(model: str, provider: str | None) -> Iterator[tuple[str, str | None]]:
    """Ways to read a model reference: as given, then with a provider prefix split off."""
    ref = model.strip()
    yield ref, provider
    for sep in (":", "/"):
        if sep in ref:
            prefix, rest = ref.split(sep, 1)
            if provider is None:
                yield rest, prefix
            yield rest, provider


def _longest_prefix(table: Mapping[str, int], names: Iterable[str]) -> int | None:
    best: tuple[int, int] | None = None
    for name in names:
        for prefix, value in table.items():
            if name.startswith(prefix.lower()) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), value)
    return best[1] if best else None


class Pricing:
    """Prices usage and estimates calls under one policy.

    Args:
        overrides: per-model prices that win over the snapshot, keyed by model name
            (case-insensitive; a provider prefix such as ``openai:`` on the looked-up name is
            tolerated).
        unknown_model: policy for models neither overridden nor in the snapshot.
        buffer: default estimate multiplier (>= 1).
        default_output_tokens: output cap assumed for models without a known cap.
        output_caps: extra per-model output caps (longest prefix match), merged over
            :data:`DEFAULT_OUTPUT_CAPS`.
        token_counter: counts prompt tokens; default is an offline tokenizer if available,
            else the chars-per-token approximation (see ``runcycles_core._tokens``).
    """

    def __init__(
        self,
        *,
        overrides: Mapping[str, ModelPrice] | None = None,
        unknown_model: UnknownModelPolicy | None = None,
        buffer: Rate = DEFAULT_BUFFER,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        output_caps: Mapping[str, int] | None = None,
        token_counter: TokenCounter | None = None,
    ) -> None:
        self.overrides = {key.strip().lower(): value for key, value in (overrides or {}).items()}
        self.unknown_model = unknown_model or UnknownModelPolicy.raise_error()
        self.buffer = self._check_buffer(buffer)
        if default_output_tokens <= 0:
            raise ValueError("default_output_tokens must be positive")
        self.default_output_tokens = default_output_tokens
        self.output_caps = {**DEFAULT_OUTPUT_CAPS, **(output_caps or {})}
        self._token_counter = token_counter

    @staticmethod
    def _check_buffer(buffer: Rate) -> Decimal:
        value = _dec(buffer, "buffer")
        if value < 1:
            raise ValueError("buffer must be >= 1 (a smaller buffer would under-reserve)")
        return value

    def _resolve(self, model: str, provider: str | None, at: datetime) -> _Resolved:
        candidates = list(_candidates(model, provider))
        for ref, _ in candidates:
            override = self.overrides.get(ref.lower())
            if override is not None:
                return _Resolved(
                    PriceSource("override", model_id=ref.lower(), provider_id=provider),
                    _flat_usd(override),
                    override.max_output_tokens,
                )
        reason = "not in the genai-prices snapshot"
        for ref, provider_id in candidates:
            try:
                found_provider, info = _snapshot().find_provider_model(ref, None, provider_id, None)
            except LookupError:
                continue
            if not self._has_token_prices(info, at):
                reason = f"the snapshot lists {info.id!r} without token prices"
                continue
            return _Resolved(
                PriceSource(
                    "genai-prices",
                    version=_genai_prices_version(),
                    latest_price_date=_latest_price_date(),
                    model_id=info.id,
                    provider_id=found_provider.id,
                ),
                functools.partial(self._snapshot_usd, info, found_provider),
            )
        fallback = self.unknown_model.fallback
        if fallback is None:
            raise UnknownModelError(model, provider, reason)
        return _Resolved(
            PriceSource("fallback", model_id=model, provider_id=provider),
            _flat_usd(fallback),
            fallback.max_output_tokens,
        )

    @staticmethod
    def _has_token_prices(info: ModelInfo, at: datetime) -> bool:
        # Some entries (subscription-bundled models) carry an empty price: charging $0 for them
        # would silently disable budgets, so they count as unknown.
        prices = info.get_prices(at)
        return prices.input_mtok is not None or prices.output_mtok is not None

    @staticmethod
    def _snapshot_usd(info: ModelInfo, provider: Provider, usage: Usage, at: datetime) -> Decimal:
        from genai_prices.types import Usage as GenaiUsage

        calc = info.calc_price(
            GenaiUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                output_reasoning_tokens=usage.reasoning_tokens,
            ),
            provider,
            genai_request_timestamp=at,
        )
        return Decimal(calc.total_price)

    def price(
        self, model: str, usage: Usage, provider: str | None = None, *, at: datetime | None = None
    ) -> Price:
        """Price ``usage`` of ``model``; ``at`` picks date-dependent prices (default: now).

        Raises:
            UnknownModelError: the model has no price and the policy is to raise.
        """
        when = at or datetime.now(tz=timezone.utc)
        resolved = self._resolve(model, provider, when)
        usd = resolved.usd(usage, when)
        return Price(model, usage, usd, usd_to_microcents(usd), resolved.source, when)

    def output_cap(
        self, model: str, provider: str | None = None, *, at: datetime | None = None
    ) -> int:
        """Output tokens an estimate assumes when the request sets no max tokens."""
        resolved = self._resolve(model, provider, at or datetime.now(tz=timezone.utc))
        if resolved.max_output_tokens is not None:
            return resolved.max_output_tokens
        names = [ref.lower() for ref, _ in _candidates(model, provider)]
        if resolved.source.model_id:
            names.append(resolved.source.model_id.lower())
        found = _longest_prefix(self.output_caps, names)
        return found if found is not None else self.default_output_tokens

    @property
    def token_counter(self) -> TokenCounter:
        return self._token_counter or default_token_counter()

    def count_input_tokens(
        self, *, prompt: str | None = None, messages: Iterable[object] | None = None
    ) -> int:
        """Offline count of a prompt string or a list of chat messages."""
        if (prompt is None) == (messages is None):
            raise ValueError("pass exactly one of prompt or messages")
        if prompt is not None:
            return self.token_counter(prompt)
        assert messages is not None
        return count_message_tokens(messages, self.token_counter)

    def estimate(
        self,
        model: str,
        *,
        input_tokens: int | None = None,
        prompt: str | None = None,
        messages: Iterable[object] | None = None,
        max_output_tokens: int | None = None,
        cache_write_tokens: int = 0,
        buffer: Rate | None = None,
        provider: str | None = None,
        at: datetime | None = None,
    ) -> Estimate:
        """Amount to reserve before calling ``model``.

        ``(price(input tokens) + price(output cap)) * buffer``, rounded up to µ¢. Input tokens are
        ``input_tokens`` if given, else counted from ``prompt`` or ``messages``; the output cap is
        ``max_output_tokens`` if given, else :meth:`output_cap`. Input is priced as uncached
        input, except ``cache_write_tokens`` of it, priced at the cache-write rate: prompt-cache
        writes cost more than plain input on some providers (1.25-2x on Anthropic).
        """
        given = sum(x is not None for x in (input_tokens, prompt, messages))
        if given != 1:
            raise ValueError("pass exactly one of input_tokens, prompt or messages")
        method: Literal["given", "tokenizer", "approximate"]
        if input_tokens is not None:
            method, count = "given", input_tokens
        else:
            count = self.count_input_tokens(prompt=prompt, messages=messages)
            method = "approximate" if self.token_counter is approximate_tokens else "tokenizer"
        if max_output_tokens is not None and max_output_tokens < 0:
            raise ValueError("max_output_tokens must be non-negative")
        cap = (
            max_output_tokens
            if max_output_tokens is not None
            else self.output_cap(model, provider, at=at)
        )
        factor = self.buffer if buffer is None else self._check_buffer(buffer)
        usage = Usage(
            input_tokens=count,
            output_tokens=cap,
            cache_write_tokens=min(cache_write_tokens, count),
        )
        base = self.price(model, usage, provider, at=at)
        return Estimate(
            model=model,
            input_tokens=count,
            output_tokens=cap,
            input_token_method=method,
            buffer=factor,
            base=base,
            amount=usd_to_microcents(base.usd * factor),
        )


_default_pricing = Pricing()


def default_pricing() -> Pricing:
    """The :class:`Pricing` used by the module-level :func:`price` and :func:`estimate`."""
    return _default_pricing


def set_default_pricing(pricing: Pricing) -> None:
    """Replace the process-wide default :class:`Pricing` (overrides, policy, buffer)."""
    global _default_pricing
    _default_pricing = pricing


def price(
    model: str, usage: Usage, provider: str | None = None, *, at: datetime | None = None
) -> Price:
    """:meth:`Pricing.price` on the default instance."""
    return _default_pricing.price(model, usage, provider, at=at)


def estimate(
    model: str,
    *,
    input_tokens: int | None = None,
    prompt: str | None = None,
    messages: Iterable[object] | None = None,
    max_output_tokens: int | None = None,
    cache_write_tokens: int = 0,
    buffer: Rate | None = None,
    provider: str | None = None,
    at: datetime | None = None,
) -> Estimate:
    """:meth:`Pricing.estimate` on the default instance."""
    return _default_pricing.estimate(
        model,
        input_tokens=input_tokens,
        prompt=prompt,
        messages=messages,
        max_output_tokens=max_output_tokens,
        cache_write_tokens=cache_write_tokens,
        buffer=buffer,
        provider=provider,
        at=at,
    )
