"""Plugin kit: guards for model and tool calls, replay-safe steps, and priced commits."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ._kit_settings import CyclesSettings, ModelCall, estimate_for
from .config import CyclesConfig
from .errors import ReservationExpiredError
from .lifecycle import AsyncGuard, Guard, GuardSpec, GuardState
from .models import CyclesMetrics, ReservationStatus
from .pricing import UnknownModelError, Usage
from .settlement import SettlementResult

__all__ = [
    "acommit_usage",
    "amodel_guard",
    "areserve_model_step",
    "areserve_tool_step",
    "atool_guard",
    "commit_usage",
    "model_guard",
    "reserve_model_step",
    "reserve_tool_step",
    "tool_guard",
]

log = logging.getLogger("runcycles_core.plugin")


def _model_spec(settings: CyclesSettings, config: CyclesConfig, call: ModelCall) -> GuardSpec:
    return settings.spec(
        config,
        estimate=estimate_for(settings, call),
        action_kind=call.action_kind,
        action_name=f"{call.provider}:{call.model}" if call.provider else call.model,
        idempotency_key=call.idempotency_key,
        subject=call.subject,
        dimensions=call.dimensions,
        metadata=call.metadata,
    )


def model_guard(settings: CyclesSettings, call: ModelCall) -> Guard:
    """A sync guard for ``call`` (not yet reserved: call ``.reserve()``)."""
    client = settings.sync_client()
    return Guard(client, _model_spec(settings, client.config, call))


def amodel_guard(settings: CyclesSettings, call: ModelCall) -> AsyncGuard:
    """An async guard for ``call`` (not yet reserved: ``await .reserve()``)."""
    client = settings.async_client()
    return AsyncGuard(client, _model_spec(settings, client.config, call))


def _tool_estimate(settings: CyclesSettings, tool: str) -> int | None:
    budgets = settings.tool_budgets
    if budgets is None:
        return None
    if tool in budgets:
        return budgets[tool]
    return budgets.get("*")


def _tool_spec(
    settings: CyclesSettings,
    config: CyclesConfig,
    tool: str,
    estimate: int,
    idempotency_key: str | None,
    subject: Mapping[str, str | None] | None,
) -> GuardSpec:
    return settings.spec(
        config,
        estimate=estimate,
        action_kind=f"tool.{tool}",
        action_name=tool,
        idempotency_key=idempotency_key,
        subject=subject,
        dimensions=None,
        metadata=None,
    )


def tool_guard(
    settings: CyclesSettings,
    tool: str,
    *,
    idempotency_key: str | None = None,
    subject: Mapping[str, str | None] | None = None,
) -> Guard | None:
    """A sync guard gating tool ``tool`` (kind ``tool.<name>``), or None if tools are not
    budgeted for it."""
    estimate = _tool_estimate(settings, tool)
    if estimate is None:
        return None
    client = settings.sync_client()
    return Guard(
        client, _tool_spec(settings, client.config, tool, estimate, idempotency_key, subject)
    )


def atool_guard(
    settings: CyclesSettings,
    tool: str,
    *,
    idempotency_key: str | None = None,
    subject: Mapping[str, str | None] | None = None,
) -> AsyncGuard | None:
    """Async twin of :func:`tool_guard`."""
    estimate = _tool_estimate(settings, tool)
    if estimate is None:
        return None
    client = settings.async_client()
    return AsyncGuard(
        client, _tool_spec(settings, client.config, tool, estimate, idempotency_key, subject)
    )


# -- steps that a framework may run again under the same identity --------------------------------

#: Fresh keys tried for one step before falling back to a random suffix.
STEP_ATTEMPTS = 8


def _step_key(base: str, attempt: int) -> str:
    if attempt == 0:
        return base
    if attempt < STEP_ATTEMPTS:
        return f"{base}:again{attempt}"
    return f"{base}:again-{uuid.uuid4().hex}"


def _replayed_inactive(guard: Guard | AsyncGuard) -> bool:
    # A replayed reserve returns the original reservation with remaining_ttl_ms == 0 once that
    # reservation is no longer held; a fresh (or still held) one always has time left.
    resp = guard.response
    return guard.state is GuardState.HELD and resp is not None and resp.remaining_ttl_ms == 0


def _paid(status: ReservationStatus, key: str) -> bool:
    if status is ReservationStatus.COMMITTED:
        log.info("step %s was already paid by an earlier attempt; not charging it again", key)
        return True
    # Released or expired: that attempt paid nothing, so this one needs its own reservation.
    return False


def _reserve_step(make: Callable[[str], Guard], key: str) -> Guard | None:
    for attempt in range(STEP_ATTEMPTS + 1):
        guard = make(_step_key(key, attempt)).reserve()
        if not _replayed_inactive(guard):
            return guard
        assert guard.reservation_id is not None
        try:
            status = guard.client.get_reservation(guard.reservation_id).status
        except ReservationExpiredError:
            status = ReservationStatus.EXPIRED
        if _paid(status, key):
            return None
    raise AssertionError("unreachable: the last attempt uses a random key")


async def _areserve_step(make: Callable[[str], AsyncGuard], key: str) -> AsyncGuard | None:
    for attempt in range(STEP_ATTEMPTS + 1):
        guard = await make(_step_key(key, attempt)).reserve()
        if not _replayed_inactive(guard):
            return guard
        assert guard.reservation_id is not None
        try:
            status = (await guard.client.get_reservation(guard.reservation_id)).status
        except ReservationExpiredError:
            status = ReservationStatus.EXPIRED
        if _paid(status, key):
            return None
    raise AssertionError("unreachable: the last attempt uses a random key")


def reserve_model_step(settings: CyclesSettings, call: ModelCall) -> Guard | None:
    """Reserve for ``call`` when its ``idempotency_key`` names a framework step that may run
    more than once (a retried task, a resumed or replayed checkpoint).

    - First run, or an earlier attempt still holding its reservation: that reservation, held.
    - An earlier attempt under the key **committed**: None. The step is paid; run it without
      settling anything (a commit would not match the earlier one).
    - An earlier attempt **released** or **expired** (it paid nothing): a fresh reservation
      under ``<key>:again<n>``, deterministic so a later attempt finds it again.

    Without an ``idempotency_key`` this is ``model_guard(settings, call).reserve()``.
    """
    key = call.idempotency_key
    if key is None:
        return model_guard(settings, call).reserve()
    return _reserve_step(
        lambda k: model_guard(settings, dataclasses.replace(call, idempotency_key=k)), key
    )


async def areserve_model_step(settings: CyclesSettings, call: ModelCall) -> AsyncGuard | None:
    """Async twin of :func:`reserve_model_step`."""
    key = call.idempotency_key
    if key is None:
        return await amodel_guard(settings, call).reserve()
    return await _areserve_step(
        lambda k: amodel_guard(settings, dataclasses.replace(call, idempotency_key=k)), key
    )


def reserve_tool_step(
    settings: CyclesSettings,
    tool: str,
    *,
    idempotency_key: str,
    subject: Mapping[str, str | None] | None = None,
) -> Guard | None:
    """:func:`reserve_model_step` for tool ``tool``; None also when tools are not budgeted."""
    estimate = _tool_estimate(settings, tool)
    if estimate is None:
        return None
    client = settings.sync_client()

    def make(key: str) -> Guard:
        return Guard(client, _tool_spec(settings, client.config, tool, estimate, key, subject))

    return _reserve_step(make, idempotency_key)


async def areserve_tool_step(
    settings: CyclesSettings,
    tool: str,
    *,
    idempotency_key: str,
    subject: Mapping[str, str | None] | None = None,
) -> AsyncGuard | None:
    """Async twin of :func:`reserve_tool_step`."""
    estimate = _tool_estimate(settings, tool)
    if estimate is None:
        return None
    client = settings.async_client()

    def make(key: str) -> AsyncGuard:
        return AsyncGuard(client, _tool_spec(settings, client.config, tool, estimate, key, subject))

    return await _areserve_step(make, idempotency_key)


def _priced(
    settings: CyclesSettings,
    model: str,
    usage: Usage,
    provider: str | None,
    model_version: str | None,
) -> tuple[int | None, CyclesMetrics, dict[str, Any]]:
    custom = {
        k: v
        for k, v in {
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        }.items()
        if v
    }
    metrics = CyclesMetrics(
        tokens_input=usage.input_tokens,
        tokens_output=usage.output_tokens,
        model_version=(model_version or model)[:128],
        custom=custom or None,
    )
    try:
        p = settings.prices.price(model, usage, provider)
    except UnknownModelError as exc:
        # The reservation was made (an explicit estimate), so the spend is still recorded:
        # the estimate is committed, tagged, rather than $0.
        log.warning("cannot price %s (%s); committing the estimate", model, exc)
        return None, metrics, {"actual_source": "estimate", "pricing_error": str(exc)[:200]}
    return p.amount, metrics, {"actual_source": "priced_usage", **p.metadata()}


def commit_usage(
    guard: Guard,
    settings: CyclesSettings,
    model: str,
    usage: Usage,
    *,
    provider: str | None = None,
    model_version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SettlementResult | None:
    """Price ``usage`` of ``model`` and commit it on ``guard`` with token metrics and the price
    provenance in the commit metadata (``metadata`` adds to it)."""
    amount, metrics, priced = _priced(settings, model, usage, provider, model_version)
    return guard.commit(amount, metrics=metrics, metadata={**priced, **(metadata or {})})


async def acommit_usage(
    guard: AsyncGuard,
    settings: CyclesSettings,
    model: str,
    usage: Usage,
    *,
    provider: str | None = None,
    model_version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SettlementResult | None:
    """Async twin of :func:`commit_usage`."""
    amount, metrics, priced = _priced(settings, model, usage, provider, model_version)
    return await guard.commit(amount, metrics=metrics, metadata={**priced, **(metadata or {})})
