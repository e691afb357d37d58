"""The durable commit journal (client-recovery profile, durable level).

Once the actual amount of a guarded action is known, the lifecycle writes a :class:`Record` here
**before** its first commit (or event) request leaves the process, and deletes it only after a
schema-valid success or an understood terminal rejection. A process killed in between finds the
record on its next start and settles it with :meth:`CommitJournal.replay`, reusing the stored
idempotency key, so the server applies the spend at most once.

The journal knows nothing about HTTP. Settling is a callback returning an :data:`Outcome`:

* :class:`Settled` / :class:`Rejected` - the record is deleted;
* :class:`RetryLater` - attempts and the absolute earliest retry time are persisted (a 429
  ``Retry-After`` floor survives restarts: replay skips the record until it is due);
* :class:`SwitchToEvent` - the record is durably switched to event mode (410 /
  ``RESERVATION_EXPIRED``), then the callback is called again with the event-mode record;
* :class:`GiveUp` - the record is moved to ``quarantine/`` with the reason, never dropped.

Layout::

    <directory>/<sha256(server_url, tenant)>/        (0700) one partition per server and tenant
        v2-<sha256 hex of the UTF-8 reservation id>.json   (0600) one pending settlement
        locks/v2-<...>.lock                          per-record lock files
        quarantine/<name>-<ms>.json + .reason.json   corrupt, unsupported or given-up records

The partition never includes an API key, so records survive key rotation for the same tenant.

Writes are atomic: a temp file in the same directory is written, fsynced, ``os.replace``-d over the
record, and the directory is fsynced. A settlement's first record (:meth:`CommitJournal.settle`)
is, by default (``sync="overlap"``), renamed into place before the request leaves and fsynced by
a background group-commit thread while the request is in flight; ``settle`` waits for that fsync
before it returns with the record still pending, and drops it once the record is deleted.
Corrupt, truncated, unsupported-version or misnamed records are quarantined (logged at ERROR
and listed in the :class:`ReplayReport`) and never block others.

Exactly-once replay uses one ``fcntl.flock`` lock file per record (POSIX only). Replay takes the
lock without blocking (a record another worker holds is reported ``busy`` and skipped), re-reads
the record under the lock (it may be gone: someone settled it), settles, then deletes it while
still holding the lock. Lock files are removed with their record; because of that, a lock is only
trusted after checking that the locked inode is still the one at the lock path. ``flock`` locks
belong to the open file, so this also excludes threads of one process, and the kernel drops them
when a holder dies, so there is no staleness to handle.

Legacy names: a ``*.json`` record in the partition that is not named ``v2-<sha256>.json`` (for
example a sanitized reservation id) is migrated to its standard name on replay or on :meth:`get`
of its exact id. A legacy file is deleted only when its stored reservation id is the one being
migrated, so distinct ids that sanitize alike never clobber each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "JOURNAL_VERSION",
    "CommitJournal",
    "GiveUp",
    "JournalError",
    "Outcome",
    "Record",
    "Rejected",
    "ReplayReport",
    "RetryLater",
    "Settled",
    "SwitchToEvent",
    "record_filename",
]

logger = logging.getLogger("runcycles_core.journal")

JOURNAL_VERSION = 2
_NAME = re.compile(r"^v2-[0-9a-f]{64}\.json$")
_TMP_PREFIX = ".tmp-"
_TMP_MAX_AGE_S = 3600.0


class JournalError(OSError):
    """The journal could not be written; the lifecycle surfaces it and still settles."""


def record_filename(reservation_id: str) -> str:
    """``v2-<sha256 lowercase hex of the exact UTF-8 reservation id>.json`` (profile standard)."""
    return f"v2-{hashlib.sha256(reservation_id.encode('utf-8')).hexdigest()}.json"


def _legacy_filename(reservation_id: str) -> str:
    # The sanitized naming older journals used: lossy, so distinct ids can collide.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", reservation_id) + ".json"


class Record(BaseModel):
    """One unresolved settlement.

    ``reservation_id`` names the record; a direct event without a reservation uses a synthetic
    id (e.g. ``"event:" + idempotency_key``). ``event`` is the complete ``POST /v1/events`` body
    to send if the commit gets 410 / ``RESERVATION_EXPIRED`` (original subject, action, actual,
    metrics, metadata and the same idempotency key). Times are UNIX epoch seconds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[2] = 2
    reservation_id: str = Field(min_length=1)
    idempotency_key: str = Field(min_length=1)
    amount: int = Field(ge=0)
    unit: str = Field(min_length=1)
    mode: Literal["commit", "event"] = "commit"
    metrics: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    event: dict[str, Any] | None = None
    attempts: int = Field(default=0, ge=0)
    next_attempt_at: float | None = None
    created_at: float = Field(default_factory=time.time)
    last_error: str | None = None

    def due(self, now: float) -> bool:
        return self.next_attempt_at is None or self.next_attempt_at <= now


@dataclass(frozen=True)
class Settled:
    """Schema-valid success: delete the record."""


@dataclass(frozen=True)
class Rejected:
    """An understood terminal rejection (e.g. already finalized): delete the record, log why."""

    reason: str


@dataclass(frozen=True)
class RetryLater:
    """Keep the record; do not try again before ``at`` (epoch seconds; None = next replay)."""

    at: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class SwitchToEvent:
    """The reservation expired: persist event mode, then settle again through the event."""

    reason: str | None = None


@dataclass(frozen=True)
class GiveUp:
    """Settlement is impossible without a human: quarantine the record with ``reason``."""

    reason: str


Outcome = Settled | Rejected | RetryLater | SwitchToEvent | GiveUp


@dataclass
class ReplayReport:
    """What one replay pass did, by reservation id (quarantined and busy: by file name)."""

    settled: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    retry_later: list[str] = field(default_factory=list)
    not_due: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    journal_errors: list[str] = field(default_factory=list)
    """Journal I/O failures met by :meth:`CommitJournal.settle` (settlement still ran)."""

    @property
    def unresolved(self) -> int:
        """Records still pending after this pass (not counting quarantined ones)."""
        return len(self.retry_later) + len(self.not_due) + len(self.busy) + len(self.failed)


def _fsync_dir(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_dir(path: Path, *, enforce: bool = True) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if enforce and path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)
    return path


class _SyncTicket:
    """One record write whose fsyncs (file, then directory) the background syncer owes."""

    __slots__ = ("cancelled", "directory", "done", "error", "fd")

    def __init__(self, fd: int, directory: str) -> None:
        self.fd = fd
        self.directory = directory
        self.cancelled = False
        self.error: OSError | None = None
        self.done = threading.Event()

    def wait(self) -> None:
        """Block until the record and its directory entry are on stable storage."""
        self.done.wait()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """The record is gone (settled): its fsyncs are no longer worth doing."""
        self.cancelled = True


class _Syncer:
    """Group commit for ``sync="overlap"`` journals: one daemon thread fsyncs every record
    written since it last ran (each file, then each directory once), while the writers' commit
    requests are in flight. fsync releases the GIL, so the wait overlaps the network."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A forked child has no syncer thread and must not wait on the parent's tickets.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cv = threading.Condition()
        self._queue: list[_SyncTicket] = []
        self._thread: threading.Thread | None = None

    def submit(self, fd: int, directory: str) -> _SyncTicket:
        ticket = _SyncTicket(fd, directory)
        with self._cv:
            self._queue.append(ticket)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="runcycles-journal-sync", daemon=True
                )
                self._thread.start()
            self._cv.notify()
        return ticket

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                batch, self._queue = self._queue, []
            self._sync(batch)

    @staticmethod
    def _sync(batch: list[_SyncTicket]) -> None:
        dirs: dict[str, list[_SyncTicket]] = {}
        for t in batch:
            try:
                if not t.cancelled:
                    os.fsync(t.fd)
                    dirs.setdefault(t.directory, []).append(t)
            except OSError as exc:
                t.error = exc
            finally:
                os.close(t.fd)
        for directory, tickets in dirs.items():
            try:
                _fsync_dir(directory)
            except OSError as exc:
                for t in tickets:
                    t.error = exc
        for t in batch:
            t.done.set()


_syncer = _Syncer()


def _atomic_write(
    path: str | os.PathLike[str], data: bytes, *, durable: bool = True, defer: bool = False
) -> _SyncTicket | None:
    """Write ``path`` atomically (temp file + ``os.replace``). ``durable``: fsync the file
    before the rename and the directory after it. ``defer`` (with ``durable``): the record is
    in place (a killed process leaves it behind) when this returns, and the fsyncs are owed by
    the returned ticket instead, done by the background syncer."""
    target = os.fspath(path)
    parent = os.path.dirname(target)
    tmp = f"{parent}/{_TMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    handed_off = False
    try:
        try:
            os.fchmod(fd, 0o600)  # umask can only narrow; make it exact
            os.write(fd, data)
            if durable and not defer:
                os.fsync(fd)
            os.replace(tmp, target)
            if durable and defer:
                handed_off = True
                return _syncer.submit(fd, parent)
        finally:
            if not handed_off:
                os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(parent)
    return None


class _Corrupt(Exception):
    pass


class CommitJournal:
    """A durable journal of unresolved settlements for one (server, tenant) partition.

    Args:
        directory: journal root; the partition is a subdirectory of it.
        server_url: the Cycles server base URL the records settle against.
        tenant: the tenant id (or, without one, any stable principal identifier such as a
            fingerprint of the API key - never the key itself).
        clock: epoch-seconds clock deciding which records are due (tests inject one).
        durable: fsync record writes (default). ``False`` keeps atomic renames but skips
            fsyncs, for journals that need not survive a machine crash.
        sync: when a durable settlement's first record reaches stable storage.
            ``"overlap"`` (default): the record is written (atomic rename; it survives the
            process being killed) before the request leaves, and its fsyncs run while the
            request is in flight; :meth:`settle` / :meth:`asettle` never return with the
            record pending before they completed. ``"before_send"``: fsynced before the
            request leaves (also survives a machine crash during the request). Every other
            write (updates, retry floors, the switch to event mode) is fsynced before it
            returns in both modes.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        server_url: str,
        tenant: str,
        clock: Callable[[], float] = time.time,
        durable: bool = True,
        sync: Literal["overlap", "before_send"] = "overlap",
    ) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise NotImplementedError("the commit journal needs POSIX fcntl.flock")
        self.server_url = server_url.rstrip("/")
        self.tenant = tenant
        # durable=False skips fsyncs: for journals that need not outlive the process
        # (journal_enabled=False), where the same code path must stay cheap.
        self.durable = durable
        if sync not in ("overlap", "before_send"):
            raise ValueError("sync must be 'overlap' or 'before_send'")
        self.sync = sync
        partition = hashlib.sha256(f"{self.server_url}\n{tenant}".encode()).hexdigest()
        self.root = Path(directory)
        self.path = self.root / partition
        self._clock = clock
        _private_dir(self.root, enforce=False)  # may be shared; each partition is 0700
        _private_dir(self.path)
        self._locks = _private_dir(self.path / "locks")
        self._path_s = os.fspath(self.path)
        self._locks_s = os.fspath(self._locks)
        self._quarantine = _private_dir(self.path / "quarantine")

    # -- locking -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str, *, blocking: bool) -> Iterator[bool]:
        """Hold the lock of record file ``name``; yields False if busy (non-blocking only)."""
        assert fcntl is not None
        # Plain string paths: this runs twice per guarded call, and pathlib's joins cost more
        # than the system calls.
        lock_path = f"{self._locks_s}/{name.removesuffix('.json')}.lock"
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                os.close(fd)
                yield False
                return
            try:
                current = os.stat(lock_path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            # The holder we waited for deleted (and maybe someone recreated) the lock file:
            # our lock is on a dead inode, so start over.
            os.close(fd)
        try:
            yield True
        finally:
            try:
                if not os.path.exists(f"{self._path_s}/{name}"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock_path)
            finally:
                os.close(fd)

    # -- reading -------------------------------------------------------------------------

    def _read(self, path: Path) -> Record:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _Corrupt(f"unreadable: {exc}") from exc
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Corrupt(f"not valid JSON: {exc}") from exc
        if isinstance(data, dict) and data.get("version") != JOURNAL_VERSION:
            raise _Corrupt(f"unsupported record version {data.get('version')!r}")
        try:
            record = Record.model_validate(data)
        except ValidationError as exc:
            raise _Corrupt(f"invalid record: {exc.errors(include_url=False)}") from exc
        if _NAME.match(path.name) and path.name != record_filename(record.reservation_id):
            raise _Corrupt("file name does not match the stored reservation id")
        return record

    def _quarantine_file(self, path: Path, reason: str, report: ReplayReport | None) -> None:
        stamp = int(self._clock() * 1000)
        target = self._quarantine / f"{path.stem}-{stamp}-{secrets.token_hex(3)}.json"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return
        note = {"original": path.name, "reason": reason, "quarantined_at": self._clock()}
        _atomic_write(target.with_suffix(".reason.json"), json.dumps(note).encode())
        _fsync_dir(self.path)
        logger.error("commit journal: quarantined %s: %s", path.name, reason)
        if report is not None:
            report.quarantined.append((path.name, reason))

    def _load_locked(self, name: str, report: ReplayReport | None) -> Record | None:
        """Read a record while holding its lock; quarantine it if corrupt; None if gone."""
        path = self.path / name
        try:
            return self._read(path)
        except FileNotFoundError:
            return None
        except _Corrupt as exc:
            self._quarantine_file(path, str(exc), report)
            return None

    def _names(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if _NAME.match(p.name))

    def _legacy_names(self) -> list[str]:
        return sorted(
            p.name
            for p in self.path.iterdir()
            if p.is_file() and p.suffix == ".json" and not _NAME.match(p.name)
        )

    def _migrate(self, legacy: str, report: ReplayReport | None, expect: str | None) -> None:
        with self._locked(legacy, blocking=True):
            path = self.path / legacy
            try:
                record = self._read(path)
            except FileNotFoundError:
                return
            except _Corrupt as exc:
                self._quarantine_file(path, str(exc), report)
                return
            if expect is not None and record.reservation_id != expect:
                return  # a colliding legacy name holding another id: leave it alone
            standard = record_filename(record.reservation_id)
            with self._locked(standard, blocking=True):
                if not (self.path / standard).exists():
                    _atomic_write(self.path / standard, record.model_dump_json().encode())
                # Only now, with the record safe under its standard name, drop the legacy copy:
                # its stored id is exactly the one migrated.
                path.unlink()
                _fsync_dir(self.path)

    def _clean_temp_files(self) -> None:
        cutoff = self._clock() - _TMP_MAX_AGE_S
        for p in self.path.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    if p.stat().st_mtime < cutoff:
                        p.unlink()

    def get(self, reservation_id: str) -> Record | None:
        """The pending record for ``reservation_id`` (migrating a legacy-named one), or None."""
        legacy = _legacy_filename(reservation_id)
        if (self.path / legacy).exists() and not _NAME.match(legacy):
            self._migrate(legacy, None, expect=reservation_id)
        name = record_filename(reservation_id)
        with self._locked(name, blocking=True):
            return self._load_locked(name, None)

    def pending(self) -> list[Record]:
        """Every valid pending record, oldest first. Corrupt ones are quarantined on the way."""
        records = []
        for name in self._names():
            path = self.path / name
            try:
                records.append(self._read(path))
            except FileNotFoundError:
                continue
            except _Corrupt:
                # Re-check under the lock before quarantining: never move a file someone is
                # replacing right now.
                with self._locked(name, blocking=True):
                    record = self._load_locked(name, None)
                if record is not None:
                    records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.reservation_id))

    def quarantined(self) -> list[Path]:
        """Quarantined record files (each has a ``.reason.json`` beside it)."""
        return sorted(p for p in self._quarantine.iterdir() if not p.name.endswith(".reason.json"))

    # -- writing -------------------------------------------------------------------------

    def _store(
        self, record: Record, *, defer: bool = False, name: str | None = None
    ) -> _SyncTicket | None:
        try:
            return _atomic_write(
                f"{self._path_s}/{name or record_filename(record.reservation_id)}",
                _dump(record),
                durable=self.durable,
                defer=defer,
            )
        except OSError as exc:
            raise JournalError(exc.errno, f"commit journal write failed: {exc}") from exc

    def write(self, record: Record) -> Record:
        """Durably store ``record`` (create or replace) before its first settlement request.

        Raises:
            JournalError: the write failed; the caller must surface it and still settle.
        """
        with self._locked(record_filename(record.reservation_id), blocking=True):
            self._store(record)
        return record

    def update(self, reservation_id: str, /, **changes: Any) -> Record:
        """Durably change fields of a pending record (e.g. ``next_attempt_at`` after a 429).

        Raises:
            KeyError: no such pending record.
        """
        if "reservation_id" in changes:
            raise ValueError("a record's reservation_id cannot change")
        name = record_filename(reservation_id)
        with self._locked(name, blocking=True):
            current = self._load_locked(name, None)
            if current is None:
                raise KeyError(reservation_id)
            updated = Record.model_validate({**current.model_dump(), **changes})
            self._store(updated)
        return updated

    def mark_done(self, reservation_id: str) -> bool:
        """Delete the record after a settlement success or terminal rejection.

        Returns False if it was already gone.
        """
        name = record_filename(reservation_id)
        with self._locked(name, blocking=True):
            return self._delete(name)

    def _delete(self, name: str) -> bool:
        # No directory fsync: a deletion lost in a crash only resurrects a settled record, and
        # its replay reuses the stored idempotency key, so the server answers with the original
        # result and nothing is charged twice. Saves one fsync per settlement.
        try:
            os.unlink(f"{self._path_s}/{name}")
        except FileNotFoundError:
            return False
        return True

    # -- replay --------------------------------------------------------------------------

    def _prepare(self, report: ReplayReport) -> list[str]:
        self._clean_temp_files()
        for legacy in self._legacy_names():
            self._migrate(legacy, report, expect=None)
        return self._names()

    def _start(self, name: str, now: float, report: ReplayReport) -> Record | None:
        record = self._load_locked(name, report)
        if record is not None and not record.due(now):
            report.not_due.append(record.reservation_id)
            return None
        return record

    def _apply(self, record: Record, outcome: Outcome, report: ReplayReport) -> Record | None:
        """Persist an outcome; returns the record to settle again (after a mode switch)."""
        name = record_filename(record.reservation_id)
        rid = record.reservation_id
        if isinstance(outcome, Settled):
            self._delete(name)
            report.settled.append(rid)
        elif isinstance(outcome, Rejected):
            self._delete(name)
            logger.warning("commit journal: %s rejected, dropped: %s", rid, outcome.reason)
            report.rejected.append(rid)
        elif isinstance(outcome, RetryLater):
            at = outcome.at
            if at is not None and record.next_attempt_at is not None:
                at = max(at, record.next_attempt_at)  # never move a server-given floor earlier
            self._store(
                record.model_copy(
                    update={
                        "attempts": record.attempts + 1,
                        "next_attempt_at": at,
                        "last_error": outcome.reason,
                    }
                )
            )
            report.retry_later.append(rid)
        elif isinstance(outcome, SwitchToEvent):
            if record.mode == "event" or record.event is None:
                why = "already in event mode" if record.mode == "event" else "no event payload"
                self._quarantine_file(self.path / name, f"cannot switch to event: {why}", report)
                return None
            switched = record.model_copy(
                update={
                    "mode": "event",
                    "attempts": record.attempts + 1,
                    "last_error": outcome.reason,
                }
            )
            self._store(switched)  # durable before the event request is attempted
            return switched
        elif isinstance(outcome, GiveUp):
            self._quarantine_file(self.path / name, f"gave up: {outcome.reason}", report)
        else:  # pragma: no cover - guarded by the type
            raise TypeError(f"not a settlement outcome: {outcome!r}")
        return None

    def _failed(self, record: Record, exc: Exception, report: ReplayReport) -> None:
        logger.warning("commit journal: settling %s raised %r", record.reservation_id, exc)
        self._store(
            record.model_copy(update={"attempts": record.attempts + 1, "last_error": repr(exc)})
        )
        report.failed.append((record.reservation_id, repr(exc)))

    @contextlib.contextmanager
    def _journaled(self, record: Record, report: ReplayReport) -> Iterator[None]:
        """Hold ``record``'s lock and store it; on journal I/O failure, log and carry on.

        With ``sync="overlap"`` the store's fsyncs run while the body (the settlement request)
        does; on the way out they are awaited if the record is still pending (the caller is
        about to be told it is durable) and dropped if it was settled.
        """
        name = record_filename(record.reservation_id)
        ticket: _SyncTicket | None = None
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._locked(name, blocking=True))
                ticket = self._store(record, defer=self.sync == "overlap", name=name)
            except OSError as exc:
                self._journal_error(record, exc, report)
            try:
                yield
            finally:
                if ticket is not None:
                    rid = record.reservation_id
                    if rid in report.settled or rid in report.rejected:
                        ticket.cancel()  # deleted: nothing left to make durable
                    else:
                        try:
                            ticket.wait()
                        except OSError as exc:
                            self._journal_error(record, exc, report)

    @staticmethod
    def _journal_error(record: Record, exc: OSError, report: ReplayReport) -> None:
        logger.error(
            "commit journal: cannot journal %s, settling anyway: %s", record.reservation_id, exc
        )
        report.journal_errors.append(str(exc))

    def _apply_guarded(
        self, record: Record, outcome: Outcome, report: ReplayReport
    ) -> Record | None:
        try:
            return self._apply(record, outcome, report)
        except OSError as exc:
            logger.error(
                "commit journal: cannot record outcome of %s: %s", record.reservation_id, exc
            )
            report.journal_errors.append(str(exc))
            return None

    def settle(self, record: Record, settle: Callable[[Record], Outcome]) -> ReplayReport:
        """Journal ``record``, then settle it now, holding its lock throughout.

        This is the lifecycle's first settlement: the record is durable before ``settle`` can
        send anything, and a concurrent :meth:`replay` elsewhere sees it as ``busy``. Outcomes
        are applied as in :meth:`replay`. Journal I/O failures do not prevent the settlement
        attempt: they are logged and listed in ``journal_errors``. If ``settle`` raises, the
        record stays pending (``attempts`` and ``last_error`` updated) and the exception
        propagates.

        ``settle`` must not call :meth:`write`, :meth:`update` or :meth:`mark_done` for the same
        record (its lock is held): it reports through its return value instead.
        """
        report = ReplayReport()
        with self._journaled(record, report):
            current: Record | None = record
            while current is not None:
                try:
                    outcome = settle(current)
                except Exception as exc:
                    with contextlib.suppress(OSError):
                        self._failed(current, exc, report)
                    raise
                current = self._apply_guarded(current, outcome, report)
        return report

    async def asettle(
        self, record: Record, settle: Callable[[Record], Awaitable[Outcome]]
    ) -> ReplayReport:
        """Async twin of :meth:`settle`."""
        report = ReplayReport()
        with self._journaled(record, report):
            current: Record | None = record
            while current is not None:
                try:
                    outcome = await settle(current)
                except Exception as exc:
                    with contextlib.suppress(OSError):
                        self._failed(current, exc, report)
                    raise
                current = self._apply_guarded(current, outcome, report)
        return report

    def replay(self, settle: Callable[[Record], Outcome]) -> ReplayReport:
        """Settle every due pending record once, via ``settle``; safe to run concurrently.

        A record whose ``next_attempt_at`` is in the future is skipped (``not_due``); one locked
        by another worker is skipped (``busy``); if ``settle`` raises, the record is kept with
        ``attempts`` and ``last_error`` updated (``failed``). Like :meth:`settle`, the callback
        must not write to the journal itself.
        """
        report = ReplayReport()
        for name in self._prepare(report):
            with self._locked(name, blocking=False) as held:
                if not held:
                    report.busy.append(name)
                    continue
                record = self._start(name, self._clock(), report)
                while record is not None:
                    try:
                        outcome = settle(record)
                    except Exception as exc:
                        self._failed(record, exc, report)
                        break
                    record = self._apply(record, outcome, report)
        return report

    async def areplay(self, settle: Callable[[Record], Awaitable[Outcome]]) -> ReplayReport:
        """Async twin of :meth:`replay` (file operations are local and short; run inline)."""
        report = ReplayReport()
        for name in self._prepare(report):
            with self._locked(name, blocking=False) as held:
                if not held:
                    report.busy.append(name)
                    continue
                record = self._start(name, self._clock(), report)
                while record is not None:
                    try:
                        outcome = await settle(record)
                    except Exception as exc:
                        self._failed(record, exc, report)
                        break
                    record = self._apply(record, outcome, report)
        return report


def _dump(record: Record) -> bytes:
    return record.model_dump_json().encode()
