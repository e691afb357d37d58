"""The one lifecycle every integration maps onto: reserve → execute → commit / release.

::

        reserve (estimate)          execute              commit (actual)
  NEW ─────────────────────► HELD ──────────► RAN ─────────────────────► COMMITTED
   │ denied (409)             │ never ran               settlement ambiguous → same-key
   ▼                          ▼ release                 retry → journal → events fallback
 DENIED                    RELEASED                 (never released once the action ran)

:class:`Guard` (sync) and :class:`AsyncGuard` are twins over the same rules:

- **Terminal transitions happen once.** The first of commit / release wins under a lock; a later
  commit raises :class:`LifecycleError`, a later release is a no-op.
- **Release only if the action never ran.** Reporting usage (:meth:`Guard.add_usage`) or calling
  :meth:`Guard.mark_ran` marks it as ran; after that, ending with an error or a release commits
  what was consumed (or the estimate, tagged ``actual_source=estimate``): partial usage is spent.
- **Settlement never loses spend** (see :mod:`runcycles_core.settlement`).
- **Heartbeat** extends the lease on the protocol's lead-based schedule while the guard is held;
  failures are logged with the reservation id and disposition, passed to
  ``on_heartbeat_failure`` and counted, and never cancel the action.
- **Outage policy** applies to outages only (transport errors, 5xx, 429 after retries):
  ``fail_closed`` (default) raises :class:`~runcycles_core.CyclesUnavailableError`; ``fail_open``
  runs the action unguarded and settles its actual usage later as a journaled direct-debit event.
  An explicit denial always stops the action.
- **Shadow mode** never blocks: a dry-run records the would-be decision (log + counter), the
  action runs, nothing is charged.
- **Context** (:func:`get_cycles_context`) is restored on exit, so nested guards never clobber
  the outer one.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any, Literal, TypeVar

from ._heartbeat import TERMINAL_CODES, LeaseClock
from .client import AsyncCyclesClient, CyclesClient
from .errors import (
    BudgetExceededError,
    CyclesError,
    CyclesProtocolError,
    CyclesUnavailableError,
)
from .journal import Record
from .models import (
    Action,
    Amount,
    Caps,
    CommitOveragePolicy,
    CyclesMetrics,
    Decision,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationExtendResponse,
    Subject,
    Unit,
)
from .settlement import SettlementResult, async_settler_for, settler_for

__all__ = [
    "AsyncGuard",
    "Guard",
    "GuardSpec",
    "GuardState",
    "HeartbeatFailure",
    "LifecycleError",
    "LifecycleStats",
    "OutagePolicy",
    "get_cycles_context",
    "stats",
]

log = logging.getLogger("runcycles_core.lifecycle")

OutagePolicy = Literal["fail_closed", "fail_open"]
E = TypeVar("E", bound=BudgetExceededError)
T = TypeVar("T")


class LifecycleError(CyclesError):
    """The lifecycle was used out of order (e.g. committing twice)."""


class GuardState(str, Enum):
    NEW = "NEW"
    HELD = "HELD"
    RAN = "RAN"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    DENIED = "DENIED"
    SHADOW = "SHADOW"
    UNGUARDED = "UNGUARDED"
    """Fail-open after an outage: the action runs without a reservation."""
    ABANDONED = "ABANDONED"
    """The action ran but its actual is unknown and the estimate may not stand in: nothing is
    settled (client-recovery boundary); the hold returns when the reservation expires."""


@dataclass
class LifecycleStats:
    """Process-wide counters (thread-safe), for logs, tests and metrics exporters."""

    reserved: int = 0
    denied: int = 0
    committed: int = 0
    released: int = 0
    settlement_pending: int = 0
    settlement_rejected: int = 0
    shadow_allowed: int = 0
    shadow_denied: int = 0
    fail_open: int = 0
    heartbeat_extends: int = 0
    heartbeat_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def incr(self, name: str, by: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + by)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


stats = LifecycleStats()


@dataclass(frozen=True)
class HeartbeatFailure:
    """One failed extend: what failed and what the heartbeat will do about it."""

    reservation_id: str
    error: BaseException
    disposition: Literal["retry", "stop"]
    retry_in_ms: float | None = None


@dataclass(frozen=True)
class GuardSpec:
    """Everything needed to guard one action.

    ``idempotency_key`` is the base key of the whole lifecycle: the reserve, commit, release and
    each extend derive stable keys from it, so a caller (or a framework retry) that repeats the
    same base key never pays twice. ``denial_error`` re-raises denials as a subclass of
    :class:`BudgetExceededError` (plugins use it to satisfy their framework's abort contract).
    """

    subject: Subject
    action: Action
    estimate: int
    unit: str = "USD_MICROCENTS"
    ttl_ms: int = 60_000
    grace_period_ms: int | None = None
    overage_policy: str | None = None
    metadata: Mapping[str, Any] | None = None
    idempotency_key: str = field(default_factory=lambda: str(uuid.uuid4()))
    shadow: bool = False
    outage_policy: OutagePolicy = "fail_closed"
    heartbeat: bool = True
    on_heartbeat_failure: Callable[[HeartbeatFailure], None] | None = None
    denial_error: type[BudgetExceededError] | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.estimate, bool)
            or not isinstance(self.estimate, int)
            or self.estimate < 0
        ):
            raise ValueError(f"estimate must be a non-negative int, got {self.estimate!r}")
        if not 1000 <= self.ttl_ms <= 86_400_000:
            raise ValueError("ttl_ms must be between 1000 and 86400000")
        if self.outage_policy not in ("fail_closed", "fail_open"):
            raise ValueError("outage_policy must be 'fail_closed' or 'fail_open'")

    def key(self, step: str) -> str:
        return f"{self.idempotency_key}:{step}"

    def reserve_request(self) -> ReservationCreateRequest:
        return ReservationCreateRequest(
            idempotency_key=self.key("reserve"),
            subject=self.subject,
            action=self.action,
            estimate=Amount(unit=Unit(self.unit), amount=self.estimate),
            ttl_ms=self.ttl_ms,
            grace_period_ms=self.grace_period_ms,
            overage_policy=CommitOveragePolicy(self.overage_policy)
            if self.overage_policy
            else None,
            dry_run=True if self.shadow else None,
            metadata=dict(self.metadata) if self.metadata else None,
        )


_current: contextvars.ContextVar[_GuardBase | None] = contextvars.ContextVar(
    "runcycles_guard", default=None
)


def get_cycles_context() -> _GuardBase | None:
    """The innermost active guard in this context (thread / task), or None."""
    return _current.get()


def _rebrand(exc: BudgetExceededError, cls: type[E]) -> E:
    # Re-raise a denial as a plugin's subclass while keeping every field of the original.
    if isinstance(exc, cls):
        return exc
    new = cls.__new__(cls)
    new.__dict__.update(exc.__dict__)
    new.args = exc.args
    return new


def _now_ms() -> float:
    return time.monotonic() * 1000.0


class _GuardBase:
    """State and rules shared by :class:`Guard` and :class:`AsyncGuard`."""

    def __init__(self, spec: GuardSpec) -> None:
        self.spec = spec
        self.state = GuardState.NEW
        self.reservation_id: str | None = None
        self.decision: Decision | None = None
        self.reason_code: str | None = None
        self.caps: Caps | None = None
        self.expires_at_ms: int | None = None
        self.response: ReservationCreateResponse | None = None
        self.settlement: SettlementResult | None = None
        self.metrics: CyclesMetrics | None = None
        self.commit_metadata: dict[str, Any] = {}
        self._consumed: int | None = None
        self._ran = False
        self._started_at = time.monotonic()
        self._lock = threading.Lock()
        self._token: contextvars.Token[_GuardBase | None] | None = None
        self._clock: LeaseClock | None = None
        self._first_delay = 0.0
        self._beats = 0  # granted extensions: the next extend's idempotency key

    # -- what the action reports -------------------------------------------------------------
    @property
    def ran(self) -> bool:
        return self._ran

    @property
    def consumed(self) -> int | None:
        """Usage reported so far with :meth:`add_usage` (None if none was reported)."""
        return self._consumed

    def mark_ran(self) -> None:
        """Record that the action started spending: from now on it is committed, never released."""
        self._ran = True
        if self.state is GuardState.HELD:
            self.state = GuardState.RAN

    def _abandon(self, reason: str) -> bool:
        """Give up settling without a known actual; True if this call made the transition."""
        with self._lock:
            if self.state in (
                GuardState.COMMITTED,
                GuardState.RELEASED,
                GuardState.DENIED,
                GuardState.ABANDONED,
            ):
                return False
            self.state = GuardState.ABANDONED
        log.error(
            "reservation %s not settled: %s; its hold returns when it expires",
            self.reservation_id,
            reason,
        )
        return True

    def add_usage(self, amount: int) -> None:
        """Accumulate consumed usage (e.g. per streamed chunk); marks the action as ran."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ValueError(f"usage must be a non-negative int, got {amount!r}")
        self._consumed = (self._consumed or 0) + amount
        self.mark_ran()

    def clamp_max_tokens(self, requested: int | None) -> int | None:
        """``requested`` lowered to the server's ``caps.max_tokens`` if there is one."""
        from .caps import clamp_max_tokens

        return clamp_max_tokens(requested, self.caps)

    # -- transitions -------------------------------------------------------------------------
    def _accept(self, resp: ReservationCreateResponse, sent_ms: float) -> None:
        self.response = resp
        self.decision = resp.decision
        self.reason_code = resp.reason_code
        self.caps = resp.caps
        if self.spec.shadow:
            self.state = GuardState.SHADOW
            denied = resp.decision == Decision.DENY
            stats.incr("shadow_denied" if denied else "shadow_allowed")
            log.log(
                logging.WARNING if denied else logging.DEBUG,
                "shadow mode: %s %s would be %s%s (estimate %d %s); running it anyway",
                self.spec.action.kind,
                self.spec.action.name,
                resp.decision.value,
                f" ({resp.reason_code})" if resp.reason_code else "",
                self.spec.estimate,
                self.spec.unit,
            )
            return
        self.reservation_id = resp.reservation_id
        self.expires_at_ms = resp.expires_at_ms
        self.state = GuardState.HELD
        stats.incr("reserved")
        # A replayed reservation that is no longer held (remaining_ttl_ms == 0: committed,
        # released or expired by an earlier attempt) has no lease left to keep alive.
        if self.spec.heartbeat and resp.remaining_ttl_ms:
            self._clock = LeaseClock(timeout_ms=self._timeout_ms())
            self._first_delay = self._clock.on_success(
                remaining_ttl_ms=resp.remaining_ttl_ms, sent_at_ms=sent_ms, received_at_ms=_now_ms()
            )

    def _timeout_ms(self) -> float | None:
        return None

    def _heartbeat_due(self) -> bool:
        return self.state is GuardState.HELD and self._clock is not None

    def _on_denied(self, exc: BudgetExceededError) -> BudgetExceededError:
        self.state = GuardState.DENIED
        self.decision = Decision.DENY
        self.reason_code = exc.error_code
        stats.incr("denied")
        if self.spec.denial_error is not None:
            return _rebrand(exc, self.spec.denial_error)
        return exc

    def _on_outage(self, exc: CyclesUnavailableError) -> None:
        if self.spec.shadow:
            self.state = GuardState.SHADOW
            log.warning("shadow mode: budget check unavailable (%s); running anyway", exc)
            return
        if self.spec.outage_policy == "fail_closed":
            raise exc
        self.state = GuardState.UNGUARDED
        stats.incr("fail_open")
        log.warning(
            "budget authority unavailable (%s); fail_open: running %s %s unguarded, its usage "
            "will be settled as an event",
            exc,
            self.spec.action.kind,
            self.spec.action.name,
        )

    def _claim_terminal(self) -> GuardState | None:
        """Atomically move to a terminal state; returns the prior state, or None if another
        transition already won."""
        with self._lock:
            prior = self.state
            if prior in (
                GuardState.COMMITTED,
                GuardState.RELEASED,
                GuardState.DENIED,
                GuardState.ABANDONED,
            ):
                return None
            self.state = GuardState.COMMITTED  # provisional; release paths overwrite it
            return prior

    def _settlement_record(
        self, actual: int | None, metrics: CyclesMetrics | None, metadata: Mapping[str, Any] | None
    ) -> Record:
        source = "reported"
        if actual is None:
            if self._consumed is not None:
                actual, source = self._consumed, "consumed"
            else:
                actual, source = self.spec.estimate, "estimate"
        merged: dict[str, Any] = {**self.commit_metadata, **(metadata or {})}
        merged.setdefault("actual_source", source)
        m = metrics or self.metrics or CyclesMetrics()
        if m.latency_ms is None:
            m = m.model_copy(
                update={"latency_ms": int((time.monotonic() - self._started_at) * 1000)}
            )
        metrics_dict = m.model_dump(exclude_none=True) or None
        key = self.spec.key("commit")
        event = {
            "idempotency_key": key,
            "subject": self.spec.subject.model_dump(exclude_none=True),
            "action": self.spec.action.model_dump(exclude_none=True),
            "actual": {"unit": self.spec.unit, "amount": actual},
            "metrics": metrics_dict,
            "metadata": {
                **merged,
                **(
                    {
                        "recovered_reservation_id": self.reservation_id,
                        "recovery_reason": "commit_after_reservation_expired",
                    }
                    if self.reservation_id
                    else {"recovery_reason": "fail_open_unguarded"}
                ),
            },
        }
        event = {k: v for k, v in event.items() if v is not None}
        if self.reservation_id is None:
            return Record(
                reservation_id=f"event:{key}",
                idempotency_key=key,
                amount=actual,
                unit=self.spec.unit,
                mode="event",
                metrics=metrics_dict,
                metadata=merged,
                event=event,
            )
        return Record(
            reservation_id=self.reservation_id,
            idempotency_key=key,
            amount=actual,
            unit=self.spec.unit,
            metrics=metrics_dict,
            metadata=merged,
            event=event,
        )

    def _record_settlement(self, result: SettlementResult) -> SettlementResult:
        self.settlement = result
        if result.settled:
            stats.incr("committed")
        elif result.pending:
            stats.incr("settlement_pending")
        else:
            stats.incr("settlement_rejected")
        return result

    # -- heartbeat outcomes (the sync and async twins differ only in how they send) ---------
    def _beat_succeeded(self, resp: ReservationExtendResponse, sent_ms: float) -> float | None:
        """Record a granted extension; the delay (ms) to the next beat, or None to stop."""
        assert self._clock is not None
        self._beats += 1
        stats.incr("heartbeat_extends")
        self.expires_at_ms = resp.expires_at_ms
        delay = self._clock.on_success(
            remaining_ttl_ms=resp.remaining_ttl_ms, sent_at_ms=sent_ms, received_at_ms=_now_ms()
        )
        if self._clock.should_stop_for_zero_delays:
            self._beat_report(LifecycleError("lease too short to keep up"), "stop")
            return None
        return delay

    def _beat_failed(self, exc: CyclesProtocolError | CyclesUnavailableError) -> float | None:
        """Report a failed extend; the delay (ms) before a same-key retry, or None to stop."""
        assert self._clock is not None
        if isinstance(exc, CyclesProtocolError):
            self._beat_report(exc, "stop")
            return None
        retry = self._clock.on_transient_failure(_now_ms(), exc.retry_after_ms)
        self._beat_report(exc, "stop" if retry is None else "retry", retry)
        return retry

    def _beat_report(
        self,
        error: BaseException,
        disposition: Literal["retry", "stop"],
        retry_in_ms: float | None = None,
    ) -> None:
        assert self.reservation_id is not None
        _report_heartbeat(
            self.spec, HeartbeatFailure(self.reservation_id, error, disposition, retry_in_ms)
        )

    def _enter_context(self) -> None:
        self._token = _current.set(self)

    def _exit_context(self) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None


class Guard(_GuardBase):
    """Synchronous guard over a :class:`CyclesClient`. Use :meth:`reserve` then
    :meth:`commit` / :meth:`release`, or as a context manager (reserves on enter; on exit commits
    on success and releases on error unless the action already ran)."""

    def __init__(self, client: CyclesClient, spec: GuardSpec) -> None:
        super().__init__(spec)
        self.client = client
        self._stop = threading.Event()
        self._beat_client: CyclesClient | None = None

    def _timeout_ms(self) -> float | None:
        return self.client.config.read_timeout * 1000.0

    def reserve(self) -> Guard:
        """Reserve the estimate. Raises a :class:`BudgetExceededError` on denial and (under
        ``fail_closed``) :class:`CyclesUnavailableError` on an outage."""
        if self.state is not GuardState.NEW:
            raise LifecycleError(f"reserve() called in state {self.state.value}")
        sent = _now_ms()
        try:
            resp = self.client.create_reservation(self.spec.reserve_request())
        except BudgetExceededError as exc:
            raise self._on_denied(exc) from None
        except CyclesUnavailableError as exc:
            self._on_outage(exc)
            return self
        self._accept(resp, sent)
        if self._heartbeat_due():
            _sync_beats.schedule(self._first_delay, self)
        return self

    # -- heartbeat ---------------------------------------------------------------------------
    def _beat_once(self) -> float | None:
        """One extend on the shared heartbeat pool; the delay (ms) to the next, or None."""
        assert self.reservation_id is not None
        if self._stop.is_set():
            return None
        if self._beat_client is None:
            # The heartbeat paces its own same-key retries inside the lease window (§5.4); the
            # client's retry loop would spend that window blind.
            self._beat_client = self.client.with_options(retry_enabled=False)
        sent = _now_ms()
        try:
            resp = self._beat_client.extend_reservation(
                self.reservation_id,
                idempotency_key=self.spec.key(f"extend:{self._beats}"),
                extend_by_ms=self.spec.ttl_ms,
            )
        except (CyclesProtocolError, CyclesUnavailableError) as exc:
            # An extend racing the commit is no failure.
            return None if self._stop.is_set() else self._beat_failed(exc)
        return self._beat_succeeded(resp, sent)

    def _stop_heartbeat(self) -> None:
        # The scheduler drops stopped guards; an extend already in flight finds the flag set.
        self._stop.set()

    # -- terminal ----------------------------------------------------------------------------
    def commit(
        self,
        actual: int | None = None,
        *,
        metrics: CyclesMetrics | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SettlementResult | None:
        """Settle the actual amount (default: usage reported so far, else the estimate)."""
        prior = self._claim_terminal()
        if prior is None:
            raise LifecycleError(f"commit() after the guard was already {self.state.value}")
        self._stop_heartbeat()
        if prior is GuardState.SHADOW:
            return None
        if prior is GuardState.NEW:
            self.state = prior
            raise LifecycleError("commit() before reserve()")
        record = self._settlement_record(actual, metrics, metadata)
        return self._record_settlement(settler_for(self.client).settle(record))

    def release(self, reason: str = "released") -> None:
        """Return the hold if the action never ran; if it ran, commit what it consumed."""
        if self._ran:
            if self.state not in (
                GuardState.COMMITTED,
                GuardState.RELEASED,
                GuardState.DENIED,
                GuardState.ABANDONED,
            ):
                self.commit()
            return
        prior = self._claim_terminal()
        if prior is None:
            return
        self.state = GuardState.RELEASED
        self._stop_heartbeat()
        if prior is not GuardState.HELD or self.reservation_id is None:
            return
        try:
            self.client.release_reservation(
                self.reservation_id, idempotency_key=self.spec.key("release"), reason=reason[:256]
            )
            stats.incr("released")
        except CyclesError as exc:
            # The hold still returns when the reservation expires (TTL + grace).
            log.warning("release of %s failed (%s); it will expire", self.reservation_id, exc)

    def abandon(self, reason: str) -> None:
        """Leave the reservation unsettled (no commit, no event, no release): for an action
        that ran but whose actual is unknown when the estimate must not stand in for it."""
        if self._abandon(reason):
            self._stop_heartbeat()

    def finish(self, exc: BaseException | None = None) -> None:
        """End the guard: commit on success; on error release unless the action already ran."""
        if self.state in (
            GuardState.COMMITTED,
            GuardState.RELEASED,
            GuardState.DENIED,
            GuardState.ABANDONED,
        ):
            return
        if exc is None or self._ran:
            self.commit()
        else:
            self.release(f"guarded_action_failed: {type(exc).__name__}")

    def __enter__(self) -> Guard:
        if self.state is GuardState.NEW:
            self.reserve()
        self._enter_context()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.finish(exc)
        finally:
            self._exit_context()


class AsyncGuard(_GuardBase):
    """Async twin of :class:`Guard` over an :class:`AsyncCyclesClient`."""

    def __init__(self, client: AsyncCyclesClient, spec: GuardSpec) -> None:
        super().__init__(spec)
        self.client = client
        self._beat: asyncio.Task[None] | None = None

    def _timeout_ms(self) -> float | None:
        return self.client.config.read_timeout * 1000.0

    async def reserve(self) -> AsyncGuard:
        """Async :meth:`Guard.reserve`."""
        if self.state is not GuardState.NEW:
            raise LifecycleError(f"reserve() called in state {self.state.value}")
        sent = _now_ms()
        try:
            resp = await self.client.create_reservation(self.spec.reserve_request())
        except BudgetExceededError as exc:
            raise self._on_denied(exc) from None
        except CyclesUnavailableError as exc:
            self._on_outage(exc)
            return self
        self._accept(resp, sent)
        if self._heartbeat_due():
            self._beat = asyncio.get_running_loop().create_task(self._heartbeat())
        return self

    async def _heartbeat(self) -> None:
        assert self.reservation_id is not None
        client = self.client.with_options(retry_enabled=False)  # see Guard._beat_once
        delay: float | None = self._first_delay
        while delay is not None:
            await asyncio.sleep(delay / 1000.0)
            sent = _now_ms()
            try:
                resp = await client.extend_reservation(
                    self.reservation_id,
                    idempotency_key=self.spec.key(f"extend:{self._beats}"),
                    extend_by_ms=self.spec.ttl_ms,
                )
            except (CyclesProtocolError, CyclesUnavailableError) as exc:
                delay = self._beat_failed(exc)
                continue
            delay = self._beat_succeeded(resp, sent)

    async def _stop_heartbeat(self) -> None:
        beat, self._beat = self._beat, None
        if beat is not None and beat is not asyncio.current_task():
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    async def commit(
        self,
        actual: int | None = None,
        *,
        metrics: CyclesMetrics | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SettlementResult | None:
        """Async :meth:`Guard.commit`."""
        prior = self._claim_terminal()
        if prior is None:
            raise LifecycleError(f"commit() after the guard was already {self.state.value}")
        if prior is GuardState.NEW:
            self.state = prior
            raise LifecycleError("commit() before reserve()")
        # The guard already says COMMITTED: everything from here on runs as one task that a
        # cancellation of the caller cannot abort, or the server would keep the hold while we
        # believe it settled.
        return await asyncio.shield(_detached(self._commit_now(prior, actual, metrics, metadata)))

    async def _commit_now(
        self,
        prior: GuardState,
        actual: int | None,
        metrics: CyclesMetrics | None,
        metadata: Mapping[str, Any] | None,
    ) -> SettlementResult | None:
        await self._stop_heartbeat()
        if prior is GuardState.SHADOW:
            return None
        record = self._settlement_record(actual, metrics, metadata)
        return self._record_settlement(await async_settler_for(self.client).settle(record))

    async def release(self, reason: str = "released") -> None:
        """Async :meth:`Guard.release`."""
        if self._ran:
            if self.state not in (
                GuardState.COMMITTED,
                GuardState.RELEASED,
                GuardState.DENIED,
                GuardState.ABANDONED,
            ):
                await self.commit()
            return
        prior = self._claim_terminal()
        if prior is None:
            return
        self.state = GuardState.RELEASED
        await asyncio.shield(_detached(self._release_now(prior, reason)))  # see commit()

    async def _release_now(self, prior: GuardState, reason: str) -> None:
        await self._stop_heartbeat()
        if prior is not GuardState.HELD or self.reservation_id is None:
            return
        try:
            await self.client.release_reservation(
                self.reservation_id, idempotency_key=self.spec.key("release"), reason=reason[:256]
            )
            stats.incr("released")
        except CyclesError as exc:
            log.warning("release of %s failed (%s); it will expire", self.reservation_id, exc)

    async def abandon(self, reason: str) -> None:
        """Async :meth:`Guard.abandon`."""
        if self._abandon(reason):
            await self._stop_heartbeat()

    async def finish(self, exc: BaseException | None = None) -> None:
        """Async :meth:`Guard.finish`."""
        if self.state in (
            GuardState.COMMITTED,
            GuardState.RELEASED,
            GuardState.DENIED,
            GuardState.ABANDONED,
        ):
            return
        if exc is None or self._ran:
            await self.commit()
        else:
            await self.release(f"guarded_action_failed: {type(exc).__name__}")

    async def __aenter__(self) -> AsyncGuard:
        if self.state is GuardState.NEW:
            await self.reserve()
        self._enter_context()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.finish(exc)
        finally:
            self._exit_context()


class _BeatScheduler:
    """Runs every sync guard's heartbeat: one timer thread and a small pool for the extends,
    so a guard costs a heap entry instead of a thread of its own. Guards are held weakly and
    a stopped guard is simply dropped when it comes due."""

    def __init__(self, workers: int = 4) -> None:
        self._heap: list[tuple[float, int, weakref.ref[Guard]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._timer: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="runcycles-heartbeat"
        )

    def schedule(self, delay_ms: float, guard: Guard) -> None:
        due = time.monotonic() + delay_ms / 1000.0
        with self._cv:
            entry = (due, next(self._seq), weakref.ref(guard))
            heapq.heappush(self._heap, entry)
            if self._timer is None or not self._timer.is_alive():
                self._timer = threading.Thread(
                    target=self._run, name="runcycles-heartbeat-timer", daemon=True
                )
                self._timer.start()
            if self._heap[0] is entry:
                # Only a new earliest deadline changes how long the timer sleeps: waking it for
                # every later one would cost each guarded call a thread switch.
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                due, _, ref = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
            guard = ref()
            if guard is not None and not guard._stop.is_set():
                self._pool.submit(self._fire, guard)

    def _fire(self, guard: Guard) -> None:
        try:
            delay = guard._beat_once()
        except Exception:
            log.exception("heartbeat of %s failed unexpectedly; stopped", guard.reservation_id)
            return
        if delay is not None and not guard._stop.is_set():
            self.schedule(delay, guard)


_sync_beats = _BeatScheduler()


_finishing: set[asyncio.Task[Any]] = set()


def _detached(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coro`` as a task the caller's cancellation cannot abort (held strongly until done)."""
    task = asyncio.ensure_future(coro)
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)
    return task


def _report_heartbeat(spec: GuardSpec, failure: HeartbeatFailure) -> None:
    stats.incr("heartbeat_failures")
    code = getattr(failure.error, "error_code", None)
    log.warning(
        "heartbeat for reservation %s failed (%s%s); %s",
        failure.reservation_id,
        type(failure.error).__name__,
        f" {code}" if code else "",
        f"retrying with the same key in {failure.retry_in_ms:.0f} ms"
        if failure.disposition == "retry" and failure.retry_in_ms is not None
        else "stopped" + (" (terminal)" if code in TERMINAL_CODES else ""),
    )
    if spec.on_heartbeat_failure is not None:
        try:
            spec.on_heartbeat_failure(failure)
        except Exception:
            log.exception("on_heartbeat_failure callback raised")
