"""The plugin kit: what every framework integration needs, written once.

A plugin maps its framework's hooks onto four calls and nothing else:

- :func:`model_guard` / :func:`amodel_guard` before a model call (estimate priced from the model
  and prompt, or the user's ``estimate=``; stable idempotency keys from the framework's run ids);
- :func:`commit_usage` / :func:`acommit_usage` with the framework's token usage (priced here,
  with cache and reasoning tokens and the price provenance in the commit metadata);
- ``guard.release()`` when the model call failed before producing anything;
- :func:`tool_guard` / :func:`atool_guard` to gate tool calls as action kind ``tool.<name>``;
- :func:`reserve_model_step` / :func:`reserve_tool_step` (and async twins) instead, when the key
  names a framework step that may run again (retries, resumed checkpoints): a step an earlier
  attempt already paid for is not charged again.

:class:`CyclesSettings` is the configuration every plugin entry point accepts (``client=``, the
subject fields, ``estimate=``, ``shadow=``, ``outage_policy=``…), so all plugins read alike.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import AsyncCyclesClient, CyclesClient
from .config import CyclesConfig
from .decorator import build_spec, default_async_client, default_client
from .errors import BudgetExceededError, ReservationExpiredError
from .lifecycle import AsyncGuard, Guard, GuardSpec, GuardState, OutagePolicy
from .models import CyclesMetrics, ReservationStatus
from .pricing import Pricing, UnknownModelError, Usage, default_pricing
from .settlement import SettlementResult

__all__ = [
    "CyclesSettings",
    "ModelCall",
    "acommit_usage",
    "amodel_guard",
    "areserve_model_step",
    "areserve_tool_step",
    "atool_guard",
    "commit_usage",
    "estimate_for",
    "model_guard",
    "reserve_model_step",
    "reserve_tool_step",
    "tool_guard",
]

log = logging.getLogger("runcycles_core.integration")

LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")


@dataclass(frozen=True)
class ModelCall:
    """One model invocation as a plugin sees it before it runs.

    Give at most one of ``input_tokens``, ``prompt`` or ``messages`` (none: input counts as 0).
    ``idempotency_key`` should come from the framework's own run identity (run id, thread +
    checkpoint + task…) so that the framework's retries and replays reuse it and never pay
    twice. ``subject`` holds per-run overrides of the configured subject levels.
    """

    model: str
    provider: str | None = None
    input_tokens: int | None = None
    prompt: str | None = None
    messages: Sequence[object] | None = None
    max_output_tokens: int | None = None
    idempotency_key: str | None = None
    subject: Mapping[str, str | None] | None = None
    dimensions: Mapping[str, str] | None = None
    metadata: Mapping[str, Any] | None = None
    action_kind: str = "llm.completion"


@dataclass
class CyclesSettings:
    """Configuration shared by every plugin entry point.

    Args:
        client: a :class:`CyclesClient` or :class:`AsyncCyclesClient` (the other kind is built
            from the same config when a framework needs it); default from ``CYCLES_*``.
        tenant … toolset, dimensions: the subject (per-run values override them).
        estimate: µ¢ (or ``unit``) to reserve per model call, or a callable of the
            :class:`ModelCall`; default: priced from the model and prompt by ``pricing``.
        shadow: never block; record would-be decisions only.
        outage_policy: ``fail_closed`` or ``fail_open`` (default: the client config's,
            itself ``fail_closed`` by default); denials always stop.
        tool_budgets: per-tool estimate (``"*"`` = any tool) for gating tool calls as action
            kind ``tool.<name>``; ``None`` leaves tools ungated.
        denial_error: the plugin's subclass of :class:`BudgetExceededError` to raise.
    """

    client: CyclesClient | AsyncCyclesClient | None = None
    tenant: str | None = None
    workspace: str | None = None
    app: str | None = None
    workflow: str | None = None
    agent: str | None = None
    toolset: str | None = None
    dimensions: Mapping[str, str] | None = None
    estimate: int | Callable[[ModelCall], int] | None = None
    shadow: bool = False
    outage_policy: OutagePolicy | None = None
    unit: str = "USD_MICROCENTS"
    ttl_ms: int = 60_000
    overage_policy: str | None = None
    heartbeat: bool = True
    pricing: Pricing | None = None
    tool_budgets: Mapping[str, int] | None = None
    denial_error: type[BudgetExceededError] | None = None
    metadata: Mapping[str, Any] | None = None
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.outage_policy not in (None, "fail_closed", "fail_open"):
            raise ValueError("outage_policy must be 'fail_closed' or 'fail_open'")

    @property
    def config(self) -> CyclesConfig:
        return self.sync_client().config if self.client is None else self.client.config

    def sync_client(self) -> CyclesClient:
        """The sync client (derived from an async one's config if that is what was given)."""
        if isinstance(self.client, CyclesClient):
            return self.client
        if self.client is None:
            return default_client()
        with self._lock:
            c = self._derived.get("sync")
            if c is None:
                c = self._derived["sync"] = CyclesClient(self.client.config)
            return c

    def async_client(self) -> AsyncCyclesClient:
        """The async client (derived from a sync one's config if that is what was given)."""
        if isinstance(self.client, AsyncCyclesClient):
            return self.client
        if self.client is None:
            return default_async_client()
        with self._lock:
            c = self._derived.get("async")
            if c is None:
                c = self._derived["async"] = AsyncCyclesClient(self.client.config)
            return c

    def close(self) -> None:
        """Close the sync client this settings object derived (never the one it was given);
        a derived async client needs :meth:`aclose`."""
        with self._lock:
            sync = self._derived.pop("sync", None)
            async_left = "async" in self._derived
        if sync is not None:
            sync.close()
        if async_left:
            log.warning("close() leaves a derived async client open; use aclose()")

    async def aclose(self) -> None:
        """Async :meth:`close`: closes derived sync and async clients."""
        with self._lock:
            derived, self._derived = self._derived, {}
        if derived.get("sync") is not None:
            derived["sync"].close()
        if derived.get("async") is not None:
            await derived["async"].aclose()

    @property
    def prices(self) -> Pricing:
        return self.pricing or default_pricing()

    def subject_for(self, overrides: Mapping[str, str | None] | None) -> dict[str, str | None]:
        base = {level: getattr(self, level) for level in LEVELS}
        base.update({k: v for k, v in (overrides or {}).items() if k in LEVELS and v})
        return base

    def spec(
        self,
        config: CyclesConfig,
        *,
        estimate: int,
        action_kind: str,
        action_name: str,
        idempotency_key: str | None,
        subject: Mapping[str, str | None] | None,
        dimensions: Mapping[str, str] | None,
        metadata: Mapping[str, Any] | None,
    ) -> GuardSpec:
        dims = {**(self.dimensions or {}), **(dimensions or {})} or None
        meta = {**(self.metadata or {}), **(metadata or {})} or None
        return build_spec(
            config,
            estimate=estimate,
            action_kind=action_kind,
            action_name=action_name,
            unit=self.unit,
            ttl_ms=self.ttl_ms,
            overage_policy=self.overage_policy,
            subject=self.subject_for(subject),
            dimensions=dims,
            metadata=meta,
            idempotency_key=idempotency_key,
            shadow=self.shadow,
            outage_policy=self.outage_policy,
            heartbeat=self.heartbeat,
            denial_error=self.denial_error,
        )


def estimate_for(settings: CyclesSettings, call: ModelCall) -> int:
    """What to reserve for ``call``: the user's ``estimate=`` if set, else the priced estimate
    (raises :class:`UnknownModelError` for an unpriced model, per the pricing policy)."""
    if settings.estimate is not None:
        value = settings.estimate(call) if callable(settings.estimate) else settings.estimate
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"estimate must be a non-negative int, got {value!r}")
        return value
    given: dict[str, Any] = {}
    if call.input_tokens is not None:
        given["input_tokens"] = call.input_tokens
    elif call.prompt is not None:
        given["prompt"] = call.prompt
    elif call.messages is not None:
        given["messages"] = call.messages
    else:
        given["input_tokens"] = 0
    est = settings.prices.estimate(
        call.model,
        max_output_tokens=call.max_output_tokens,
        provider=call.provider,
        **given,
    )
    return est.amount


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
