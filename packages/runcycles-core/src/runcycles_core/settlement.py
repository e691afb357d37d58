"""Settlement that never loses spend: the client-recovery profile at the durable level.

Once a guarded action ran and its actual amount is known, :class:`Settler` (sync) or
:class:`AsyncSettler` journals a record **before** the first commit leaves the process, then
commits with a fixed idempotency key. What happens next depends on the answer:

==============================================  =============================================
answer                                          what the settler does
==============================================  =============================================
2xx, schema-valid                               done; record deleted
410 ``RESERVATION_EXPIRED``                     record durably switched to event mode, then
                                                ``POST /v1/events`` with the same key
outage (transport, 5xx, 429, invalid 2xx)       record kept; retried in the background with
                                                the same key (429 ``Retry-After`` persisted)
401 / 403 / an error code we do not know        record kept for the next start; never released
understood rejection (finalized, mismatch,      record deleted, logged; the reservation is
budget denial under ``REJECT``, bad request)    never released (the action already ran)
==============================================  =============================================

A fresh settler replays records left by earlier processes once, in the background.
:meth:`Settler.flush` / :meth:`AsyncSettler.flush` drain outstanding work with a bounded wait;
whatever is still unresolved stays in the journal.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import SETTLER_ATTR, AsyncCyclesClient, CyclesClient
from .config import CyclesConfig, RetryPolicy
from .errors import (
    AuthenticationError,
    BudgetExceededError,
    CyclesProtocolError,
    CyclesUnavailableError,
    ForbiddenError,
    IdempotencyMismatchError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ReservationExpiredError,
    ReservationFinalizedError,
    UnitMismatchError,
)
from .journal import (
    CommitJournal,
    Outcome,
    Record,
    Rejected,
    ReplayReport,
    RetryLater,
    Settled,
    SwitchToEvent,
)
from .models import Amount, CommitRequest, CyclesMetrics, EventCreateRequest, Unit

__all__ = [
    "AsyncSettler",
    "SettlementResult",
    "Settler",
    "async_settler_for",
    "default_journal_dir",
    "journal_for",
    "settler_for",
]

log = logging.getLogger("runcycles_core.settlement")

_TERMINAL_REJECTIONS: tuple[type[CyclesProtocolError], ...] = (
    ReservationFinalizedError,
    IdempotencyMismatchError,
    BudgetExceededError,
    UnitMismatchError,
    InvalidRequestError,
    NotFoundError,
)


def default_journal_dir() -> Path:
    """``~/.runcycles/core-journal`` (kept apart from the official SDK's journal, whose
    records have another format and would otherwise be quarantined by ours)."""
    return Path.home() / ".runcycles" / "core-journal"


def _principal(config: CyclesConfig) -> str:
    # With a tenant configured the partition survives API-key rotation; without one, a
    # fingerprint of the key (never the key) keeps principals apart.
    if config.tenant:
        return config.tenant
    return "key-" + hashlib.sha256(config.api_key.encode()).hexdigest()[:16]


def journal_for(config: CyclesConfig) -> CommitJournal:
    """The journal partition for ``config``'s server and principal.

    With ``journal_enabled=False`` a private temporary directory is used without fsyncs:
    settlement follows the same code path, but records do not outlive the process.
    """
    if config.journal_enabled:
        directory = Path(config.journal_dir) if config.journal_dir else default_journal_dir()
    else:
        directory = Path(tempfile.mkdtemp(prefix="runcycles-journal-"))
    return CommitJournal(
        directory,
        server_url=config.base_url,
        tenant=_principal(config),
        durable=config.journal_enabled,
        sync="before_send" if config.journal_sync == "before_send" else "overlap",
    )


@dataclass
class SettlementResult:
    """How the first settlement attempt ended.

    ``settled`` is True once the server applied the spend (commit or fallback event);
    ``pending`` is True if the record is still in the journal and will be retried; otherwise
    the settlement was rejected (``rejection`` says why) and is not retried.
    """

    reservation_id: str
    settled: bool = False
    pending: bool = False
    via_event: bool = False
    rejection: str | None = None
    response: Any = None
    journal_errors: list[str] = field(default_factory=list)


def _retry_at(exc: CyclesUnavailableError, fallback_delay: float) -> float:
    delay = exc.retry_after if exc.retry_after is not None else fallback_delay
    return time.time() + max(0.0, delay)


def classify(exc: BaseException, record: Record, backoff: float) -> Outcome:
    """Map a failed settlement attempt to the journal outcome the profile requires."""
    if isinstance(exc, ReservationExpiredError) and record.mode == "commit":
        if record.event is not None:
            return SwitchToEvent(reason="RESERVATION_EXPIRED")
        return Rejected(reason="reservation expired and no event payload to fall back to")
    if isinstance(exc, (AuthenticationError, ForbiddenError)):
        # Credentials failed after the spend happened: keep it for a later start, never release.
        return RetryLater(at=None, reason=f"{type(exc).__name__}: {exc}")
    if isinstance(exc, RateLimitedError):
        return RetryLater(at=_retry_at(exc, backoff), reason="rate limited")
    if isinstance(exc, CyclesUnavailableError):
        return RetryLater(at=_retry_at(exc, backoff), reason=str(exc))
    if isinstance(exc, _TERMINAL_REJECTIONS):
        return Rejected(reason=f"{exc.error_code}: {exc.message}")
    if isinstance(exc, CyclesProtocolError):
        # An error code we do not understand: keep the record; it replays on the next start.
        return RetryLater(at=None, reason=f"unclassified {exc.status} {exc.error_code}")
    raise exc


def _commit_request(record: Record) -> CommitRequest:
    return CommitRequest(
        idempotency_key=record.idempotency_key,
        actual=Amount(unit=Unit(record.unit), amount=record.amount),
        metrics=CyclesMetrics.model_validate(record.metrics) if record.metrics else None,
        metadata=record.metadata,
    )


def _event_request(record: Record) -> EventCreateRequest:
    assert record.event is not None
    return EventCreateRequest.model_validate(record.event)


def _result_from(report: ReplayReport, result: SettlementResult) -> SettlementResult:
    rid = result.reservation_id
    result.journal_errors = list(report.journal_errors)
    if rid in report.settled:
        result.settled = True
    elif rid in report.rejected:
        result.rejection = result.rejection or "rejected"
    else:
        result.pending = True
    return result


def _spent_a_retry(report: ReplayReport) -> int:
    # Only a pass in which an attempt failed uses up the retry budget. Waiting for a record to
    # become due (a persisted 429 floor) or for another worker to release its lock does not:
    # counting those would give up on a record before it was ever allowed to be retried.
    return 1 if report.retry_later or report.failed else 0


def _next_pass_delay(
    policy: RetryPolicy, failed_passes: int, pending: list[Record], report: ReplayReport
) -> float:
    due = [r.next_attempt_at for r in pending if r.next_attempt_at is not None]
    delay = policy.backoff(max(1, failed_passes))
    if due:
        delay = max(0.0, min(min(due) - time.time(), policy.max_delay))
    if report.busy and not due:
        delay = min(delay, 0.05)
    return delay


def _closed(client: CyclesClient | AsyncCyclesClient) -> bool:
    """A closed client can settle nothing: its records wait for the next start."""
    return bool(getattr(getattr(client, "_http", None), "is_closed", False))


class _Base:
    def __init__(self, config: CyclesConfig, journal: CommitJournal) -> None:
        self.config = config
        self.journal = journal
        self._policy = config.retry_policy

    def _failed(
        self,
        exc: CyclesProtocolError | CyclesUnavailableError,
        record: Record,
        result: SettlementResult | None,
    ) -> Outcome:
        """The journal outcome of a failed attempt (shared by the sync and async settlers)."""
        outcome = classify(exc, record, self._policy.backoff(record.attempts + 1))
        if result is not None and isinstance(outcome, Rejected):
            result.rejection = outcome.reason
        self._log_outcome(record, outcome)
        return outcome

    def _log_outcome(self, record: Record, outcome: Outcome) -> None:
        if isinstance(outcome, Rejected):
            log.warning(
                "settlement of %s rejected (%s); the reservation is not released because the "
                "action already ran",
                record.reservation_id,
                outcome.reason,
            )
        elif isinstance(outcome, RetryLater):
            log.warning(
                "settlement of %s unresolved (%s); kept in the journal for a same-key retry",
                record.reservation_id,
                outcome.reason,
            )
        elif isinstance(outcome, SwitchToEvent):
            log.info(
                "reservation %s expired; settling through POST /v1/events", record.reservation_id
            )


class Settler(_Base):
    """Synchronous settlement over one :class:`CyclesClient` and its journal partition."""

    def __init__(self, client: CyclesClient, journal: CommitJournal | None = None) -> None:
        super().__init__(client.config, journal or journal_for(client.config))
        self.client = client
        self._wake = threading.Condition()
        self._outstanding = 0
        self._stopped = False
        self._worker: threading.Thread | None = None
        self._running = False
        self._kicks = 0
        self._start_replay()
        _live_settlers.add(self)

    # -- one attempt -------------------------------------------------------------------------
    def _attempt_factory(self, result: SettlementResult | None) -> Callable[[Record], Outcome]:
        def attempt(record: Record) -> Outcome:
            try:
                if record.mode == "commit":
                    resp: Any = self.client.commit_reservation(
                        record.reservation_id, _commit_request(record)
                    )
                else:
                    resp = self.client.create_event(_event_request(record))
                    if result is not None:
                        result.via_event = True
            except (CyclesProtocolError, CyclesUnavailableError) as exc:
                return self._failed(exc, record, result)
            if result is not None:
                result.response = resp
            return Settled()

        return attempt

    def settle(self, record: Record) -> SettlementResult:
        """Journal ``record`` and settle it now; unresolved work continues in the background."""
        result = SettlementResult(reservation_id=record.reservation_id)
        report = self.journal.settle(record, self._attempt_factory(result))
        _result_from(report, result)
        if result.pending:
            self._kick()
        return result

    # -- background --------------------------------------------------------------------------
    def _start_replay(self) -> None:
        if self.journal.pending():
            self._kick()

    def _kick(self) -> None:
        with self._wake:
            self._outstanding += 1
            self._kicks += 1
            if not self._running:
                self._running = True
                self._worker = threading.Thread(
                    target=self._run, name="runcycles-settler", daemon=True
                )
                self._worker.start()
            self._wake.notify_all()

    def _run(self) -> None:
        failed_passes = 0
        try:
            while not self._stopped and not _closed(self.client):
                with self._wake:
                    kicks = self._kicks
                report = self.journal.replay(self._attempt_factory(None))
                failed_passes += _spent_a_retry(report)
                pending = self.journal.pending()
                if not pending or failed_passes > self._policy.max_retries:
                    with self._wake:
                        if self._kicks != kicks:
                            # New work arrived during this pass: it gets a full retry budget.
                            failed_passes = 0
                            continue
                        # Decided under the lock, so a later _kick() starts a new worker.
                        self._running = False
                        self._outstanding = 0
                        self._wake.notify_all()
                    if pending:
                        log.warning(
                            "%d settlement(s) still unresolved after %d failed passes; they stay "
                            "in the journal %s and replay on the next start",
                            len(pending),
                            failed_passes,
                            self.journal.path,
                        )
                    return
                delay = _next_pass_delay(self._policy, failed_passes, pending, report)
                with self._wake:
                    self._wake.wait(timeout=delay)
        finally:
            # However the worker ends (client closed, stopped, crashed), nobody may keep
            # waiting for it in flush().
            with self._wake:
                if self._worker is threading.current_thread():
                    self._running = False
                    self._outstanding = 0
                    self._wake.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Retry outstanding settlements now and wait (bounded); True if none remain pending."""
        limit = self.config.retry_flush_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        report = self.journal.replay(self._attempt_factory(None))
        del report
        with self._wake:
            self._wake.notify_all()
            while self._outstanding and time.monotonic() < deadline:
                self._wake.wait(timeout=max(0.0, deadline - time.monotonic()))
        return not self.journal.pending()

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            # A closed client cannot settle anything: its records wait for the next start.
            if self._outstanding and not _closed(self.client):
                self.flush()
        self._stopped = True


class AsyncSettler(_Base):
    """Async twin of :class:`Settler` over one :class:`AsyncCyclesClient`."""

    def __init__(self, client: AsyncCyclesClient, journal: CommitJournal | None = None) -> None:
        super().__init__(client.config, journal or journal_for(client.config))
        self.client = client
        self._tasks: set[asyncio.Task[None]] = set()
        self._replayed_at_start = False

    def _attempt_factory(self, result: SettlementResult | None) -> Callable[[Record], Any]:
        async def attempt(record: Record) -> Outcome:
            try:
                if record.mode == "commit":
                    resp: Any = await self.client.commit_reservation(
                        record.reservation_id, _commit_request(record)
                    )
                else:
                    resp = await self.client.create_event(_event_request(record))
                    if result is not None:
                        result.via_event = True
            except (CyclesProtocolError, CyclesUnavailableError) as exc:
                return self._failed(exc, record, result)
            if result is not None:
                result.response = resp
            return Settled()

        return attempt

    async def settle(self, record: Record) -> SettlementResult:
        """Journal ``record`` and settle it now; unresolved work continues in a task."""
        self._maybe_replay_at_start()
        result = SettlementResult(reservation_id=record.reservation_id)
        report = await self.journal.asettle(record, self._attempt_factory(result))
        _result_from(report, result)
        if result.pending:
            self._spawn()
        return result

    def _maybe_replay_at_start(self) -> None:
        if not self._replayed_at_start:
            self._replayed_at_start = True
            if self.journal.pending():
                self._spawn()

    def _spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self._run())
        self._tasks.add(task)  # strong reference: an unreferenced task can be collected
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        failed_passes = 0
        while not _closed(self.client):
            report = await self.journal.areplay(self._attempt_factory(None))
            failed_passes += _spent_a_retry(report)
            pending = self.journal.pending()
            if not pending or failed_passes > self._policy.max_retries:
                return
            await asyncio.sleep(_next_pass_delay(self._policy, failed_passes, pending, report))

    async def flush(self, timeout: float | None = None) -> bool:
        """Retry outstanding settlements now and wait (bounded); True if none remain pending."""
        limit = self.config.retry_flush_timeout if timeout is None else timeout
        await self.journal.areplay(self._attempt_factory(None))
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=limit)
        return not self.journal.pending()

    async def aclose(self) -> None:
        """Stop the background retry task; unresolved records stay journaled for the next start.

        Called by :meth:`AsyncCyclesClient.aclose`. Without it a retry task sleeping between
        passes outlives its event loop and asyncio reports it as destroyed while pending.
        """
        loop = asyncio.get_running_loop()
        tasks, self._tasks = self._tasks, set()
        mine = [t for t in tasks if t.get_loop() is loop]
        for task in mine:
            task.cancel()
        # A task of an already closed loop cannot be cancelled or awaited from here; dropping
        # it loses nothing, the journal still holds its records.
        await asyncio.gather(*mine, return_exceptions=True)


# Each settler lives on its client (so both are collected together; views made with
# with_options() share it), and one exit hook drains whichever settlers are still alive.
_live_settlers: weakref.WeakSet[Settler] = weakref.WeakSet()
_settlers_lock = threading.Lock()


def _drain_at_exit() -> None:
    for settler in list(_live_settlers):
        settler._atexit()


atexit.register(_drain_at_exit)


def settler_for(client: CyclesClient) -> Settler:
    """The one :class:`Settler` of ``client`` (created on first use)."""
    with _settlers_lock:
        s: Settler | None = client.__dict__.get(SETTLER_ATTR)
        if s is None:
            s = Settler(client)
            client.__dict__[SETTLER_ATTR] = s
        return s


def async_settler_for(client: AsyncCyclesClient) -> AsyncSettler:
    """The one :class:`AsyncSettler` of ``client`` (created on first use)."""
    with _settlers_lock:
        s: AsyncSettler | None = client.__dict__.get(SETTLER_ATTR)
        if s is None:
            s = AsyncSettler(client)
            client.__dict__[SETTLER_ATTR] = s
        return s
