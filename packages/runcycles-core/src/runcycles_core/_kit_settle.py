"""Plugin kit: usage normalisation and the one settlement rule for a model call.

See :mod:`runcycles_core.plugin` for the rule itself; this module implements it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._kit_guards import _priced
from ._kit_settings import CyclesSettings, ModelCall
from .lifecycle import AsyncGuard, Guard, GuardState
from .pricing import Pricing, Usage
from .settlement import SettlementResult

__all__ = [
    "Received",
    "areserve_uncancellable",
    "asettle_model_call",
    "counted_usage",
    "normalize_usage",
    "settle_model_call",
    "uncancellable",
]

log = logging.getLogger("runcycles_core.plugin")

T = TypeVar("T")

_TERMINAL = (GuardState.COMMITTED, GuardState.RELEASED, GuardState.DENIED, GuardState.ABANDONED)


def _count(value: object) -> int:
    # Providers report None, floats-as-ints, negatives on bugs: anything but a positive int is 0.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def normalize_usage(
    input_tokens: object = 0,
    output_tokens: object = 0,
    *,
    cache_read_tokens: object = 0,
    cache_write_tokens: object = 0,
    reasoning_tokens: object = 0,
) -> Usage | None:
    """Core :class:`Usage` from a framework's raw counts, or None when it reports no tokens.

    Counts follow core's convention (``input_tokens`` includes cache reads and writes,
    ``output_tokens`` includes reasoning). Anything that is not a positive int counts as 0, and
    the details are clamped (cache reads <= input, cache writes <= input - cache reads,
    reasoning <= output) so that an inconsistent report still prices instead of failing.
    A report of zero input and zero output tokens is treated as *no usage* (adapters that omit
    usage fill zeros): the plugin then settles under rule (a).
    """
    inp, out = _count(input_tokens), _count(output_tokens)
    if inp == 0 and out == 0:
        return None
    cache_read = min(_count(cache_read_tokens), inp)
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cache_read,
        cache_write_tokens=min(_count(cache_write_tokens), inp - cache_read),
        reasoning_tokens=min(_count(reasoning_tokens), out),
    )


@dataclass
class Received:
    """What the provider has sent for one call so far (streamed deltas, or a final output).

    Call :meth:`add` once per content chunk (a text delta, or an output item such as a tool
    call). The guard is marked as ran by the settle functions when anything was received.
    """

    chunks: int = 0
    text: list[str] = field(default_factory=list)
    items: list[object] = field(default_factory=list)

    def add(self, delta: object = None) -> None:
        """One chunk: a ``str`` delta is counted as text, any other non-None value as an output
        item (counted like a message), None only counts the chunk."""
        self.chunks += 1
        if isinstance(delta, str):
            self.text.append(delta)
        elif delta is not None:
            self.items.append(delta)

    def __bool__(self) -> bool:
        return self.chunks > 0 or bool(self.text) or bool(self.items)

    def output_tokens(self, pricing: Pricing) -> int:
        """Offline count: the joined text plus each item, and at least one token per chunk
        (providers stream about one token per chunk, and a chunk is never free)."""
        counted = pricing.token_counter("".join(self.text)) if self.text else 0
        if self.items:
            counted += pricing.count_input_tokens(messages=self.items)
        return max(self.chunks, counted)


def _prompt_known(call: ModelCall) -> bool:
    return call.input_tokens is not None or call.prompt is not None or call.messages is not None


def input_tokens(pricing: Pricing, call: ModelCall) -> int:
    """The prompt of ``call`` counted offline (``input_tokens`` if the plugin gave it)."""
    if call.input_tokens is not None:
        return call.input_tokens
    if call.messages is not None:
        return pricing.count_input_tokens(messages=call.messages)
    return pricing.count_input_tokens(prompt=call.prompt or "")


def counted_usage(settings: CyclesSettings, call: ModelCall, received: Received | None) -> Usage:
    """Usage counted offline: the prompt of ``call`` plus what was received."""
    prices = settings.prices
    return Usage(
        input_tokens=input_tokens(prices, call),
        output_tokens=received.output_tokens(prices) if received else 0,
    )


@dataclass(frozen=True)
class _Plan:
    """What to do with a guard: release it, commit ``usage`` (``counted``: offline), or commit
    the estimate."""

    outcome: str
    usage: Usage | None = None
    counted: bool = False
    release: bool = False
    estimate: bool = False


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "completed"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, GeneratorExit):
        return "stopped"
    if isinstance(error, Exception):
        return "failed"
    return "interrupted"  # KeyboardInterrupt, SystemExit: our side stopped it, like a cancel


def _plan(
    settings: CyclesSettings,
    call: ModelCall,
    received: Received | None,
    usage: Usage | None,
    error: BaseException | None,
) -> _Plan:
    outcome = _outcome(error)
    if usage is not None:
        return _Plan(outcome, usage=usage)
    if outcome == "failed" and not received:
        # (d) the provider raised before sending anything: providers do not bill a failed
        # request, so the hold goes back.
        return _Plan(outcome, release=True)
    if outcome == "completed" and not _prompt_known(call) and not received:
        return _Plan("no_usage", estimate=True)  # (a) nothing to count: the estimate stands in
    # (a) no usage reported, (b) stopped early, (c) cancelled, (d) raised after output: the
    # request reached the provider, which bills the prompt and what it generated; we charge the
    # prompt plus what we received, counted offline.
    return _Plan(
        "no_usage" if outcome == "completed" else outcome,
        usage=counted_usage(settings, call, received),
        counted=True,
    )


def _commit_args(
    settings: CyclesSettings,
    call: ModelCall,
    plan: _Plan,
    model_version: str | None,
    metadata: Mapping[str, Any] | None,
) -> tuple[int | None, Any, dict[str, Any]]:
    meta: dict[str, Any] = {"outcome": plan.outcome}
    if plan.estimate or plan.usage is None:
        log.warning(
            "%s reported no usage and nothing to count; committing the estimate", call.model
        )
        return None, None, {"actual_source": "estimate", **meta, **(metadata or {})}
    amount, metrics, priced = _priced(
        settings, call.model, plan.usage, call.provider, model_version
    )
    if plan.counted:
        if priced.get("actual_source") == "priced_usage":
            priced["actual_source"] = "counted"
        meta["counted_input_tokens"] = plan.usage.input_tokens
        meta["counted_output_tokens"] = plan.usage.output_tokens
    return amount, metrics, {**priced, **meta, **(metadata or {})}


def settle_model_call(
    guard: Guard,
    settings: CyclesSettings,
    call: ModelCall,
    *,
    received: Received | None = None,
    usage: Usage | None = None,
    error: BaseException | None = None,
    model_version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SettlementResult | None:
    """Settle a model call however it ended, by the kit's one rule (see
    :mod:`runcycles_core.plugin`). ``usage``: what the provider reported (None if nothing);
    ``received``: what it sent so far; ``error``: why the call ended early (None: it
    completed; ``GeneratorExit``: the consumer stopped the stream; ``CancelledError``: the call
    was cancelled; any ``Exception``: the call raised). A guard already settled is left as is."""
    if guard.state in _TERMINAL:
        return None
    plan = _plan(settings, call, received, usage, error)
    if plan.release:
        guard.release(f"model_call_failed: {type(error).__name__}")
        return None
    guard.mark_ran()
    amount, metrics, meta = _commit_args(settings, call, plan, model_version, metadata)
    return guard.commit(amount, metrics=metrics, metadata=meta)


async def asettle_model_call(
    guard: AsyncGuard,
    settings: CyclesSettings,
    call: ModelCall,
    *,
    received: Received | None = None,
    usage: Usage | None = None,
    error: BaseException | None = None,
    model_version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SettlementResult | None:
    """Async :func:`settle_model_call`; it completes even if the caller is cancelled meanwhile
    (the caller still sees its cancellation, after the settlement)."""
    if guard.state in _TERMINAL:
        return None
    plan = _plan(settings, call, received, usage, error)
    if plan.release:
        await uncancellable(guard.release(f"model_call_failed: {type(error).__name__}"))
        return None
    guard.mark_ran()
    amount, metrics, meta = _commit_args(settings, call, plan, model_version, metadata)
    return await uncancellable(guard.commit(amount, metrics=metrics, metadata=meta))


async def uncancellable(operation: Awaitable[T]) -> T:
    """Run a settlement step to completion even if the caller is cancelled meanwhile.

    The step runs in its own task; a cancellation of the caller waits for it to finish and is
    then re-raised, so by the time the caller sees ``CancelledError`` nothing is left held.
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


async def areserve_uncancellable(reserve: Awaitable[AsyncGuard | None]) -> AsyncGuard | None:
    """Await a reservation (e.g. :func:`areserve_model_step`); if the caller is cancelled
    meanwhile, the request still completes (the server may already hold the estimate) and the
    hold is released before the cancellation is re-raised."""
    task = asyncio.ensure_future(reserve)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:
            guard = task.result()
            if guard is not None:
                await uncancellable(guard.release("cancelled_while_reserving"))
        raise
