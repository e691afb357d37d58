"""Plugin kit: the settings every plugin entry point accepts, and what one model call is."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._fields import strict_fields
from .client import AsyncCyclesClient, CyclesClient
from .config import CyclesConfig
from .decorator import build_spec, default_async_client, default_client
from .errors import BudgetExceededError
from .lifecycle import GuardSpec, OutagePolicy
from .pricing import Pricing, default_pricing

__all__ = ["LEVELS", "CyclesSettings", "ModelCall", "estimate_for", "resolve_settings"]

log = logging.getLogger("runcycles_core.plugin")

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


@strict_fields
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


def resolve_settings(
    settings: CyclesSettings | None,
    fields: Mapping[str, Any],
    *,
    denial_error: type[BudgetExceededError],
) -> CyclesSettings:
    """What a plugin entry point does with ``settings=`` / its ``CyclesSettings`` keywords.

    Returns ``settings``, or ``CyclesSettings(**fields)``; raises :class:`TypeError` when both
    are given. A settings object without a ``denial_error`` gets the plugin's own
    ``denial_error`` on a *copy* (a settings object shared by several plugins keeps raising
    each plugin's own type); the copy shares the derived clients on purpose (one pool).
    """
    if settings is not None and fields:
        raise TypeError("pass settings= or CyclesSettings keyword arguments, not both")
    resolved = settings if settings is not None else CyclesSettings(**fields)
    if resolved.denial_error is None:
        resolved = dataclasses.replace(resolved, denial_error=denial_error)
    return resolved
