"""What the journal pays in fsyncs: a durable write syncs the record and its directory; a
deletion syncs nothing (a resurrected settled record replays idempotently); a non-durable
journal never syncs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from runcycles_core.journal import CommitJournal, Record, RetryLater, Settled, _syncer


def _drain_syncer(directory: Path) -> None:
    """Wait until the background syncer has finished everything earlier tests handed it (it
    works in order), so that it cannot add to this test's count."""
    _syncer.submit(os.open(directory, os.O_RDONLY), str(directory)).wait()


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def _record(rid: str) -> Record:
    return Record(reservation_id=rid, idempotency_key=rid + ":commit", amount=5, unit="TOKENS")


def test_durable_write_syncs_file_and_dir_delete_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = CommitJournal(tmp_path, server_url="http://s", tenant="t")
    _drain_syncer(tmp_path)
    calls = _count_fsyncs(monkeypatch)
    journal.write(_record("r1"))
    assert len(calls) == 2
    calls.clear()
    assert journal.mark_done("r1")
    assert calls == []
    assert journal.pending() == []


def test_non_durable_journal_never_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = CommitJournal(tmp_path, server_url="http://s", tenant="t", durable=False)
    _drain_syncer(tmp_path)
    calls = _count_fsyncs(monkeypatch)
    journal.write(_record("r2"))
    assert [r.reservation_id for r in journal.pending()] == ["r2"]
    assert journal.mark_done("r2")
    assert calls == []


# -- when a settlement's first record reaches stable storage (CommitJournal(sync=...)) -----------


def test_overlap_record_is_in_place_before_the_request_and_synced_before_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync="overlap" (the default): when the settle callback runs (the request leaves), the
    record is at its name, readable by a fresh journal (a restart after kill -9 finds it); if
    the outcome leaves it pending, its fsyncs (file and directory) have completed before
    settle() returns, plus those of the retry-floor update."""
    journal = CommitJournal(tmp_path, server_url="http://s", tenant="t")
    assert journal.sync == "overlap"
    calls = _count_fsyncs(monkeypatch)
    seen: list[str] = []

    def settle(record: Record) -> RetryLater:
        restarted = CommitJournal(tmp_path, server_url="http://s", tenant="t")
        seen.extend(r.reservation_id for r in restarted.pending())
        return RetryLater(at=None, reason="server down")

    report = journal.settle(_record("r3"), settle)
    assert seen == ["r3"]
    assert report.retry_later == ["r3"] and report.journal_errors == []
    assert len(calls) == 4  # deferred file + directory, then the update's file + directory
    assert [r.attempts for r in journal.pending()] == [1]


def test_overlap_settled_record_is_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = CommitJournal(tmp_path, server_url="http://s", tenant="t")
    _drain_syncer(tmp_path)
    calls = _count_fsyncs(monkeypatch)
    report = journal.settle(_record("r4"), lambda record: Settled())
    assert report.settled == ["r4"]
    assert journal.pending() == []
    assert len(calls) <= 2  # at most the deferred pair (dropped if the syncer had not begun)


def test_before_send_syncs_before_the_request_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = CommitJournal(tmp_path, server_url="http://s", tenant="t", sync="before_send")
    _drain_syncer(tmp_path)
    calls = _count_fsyncs(monkeypatch)
    at_send: list[int] = []

    def settle(record: Record) -> Settled:
        at_send.append(len(calls))
        return Settled()

    assert journal.settle(_record("r5"), settle).settled == ["r5"]
    assert at_send == [2]
    assert len(calls) == 2


def test_overlap_fsync_failure_is_surfaced_when_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deferred fsync that fails is a journal error of the settlement that waited on it;
    the settlement attempt itself still ran."""
    journal = CommitJournal(tmp_path, server_url="http://s", tenant="t")
    _drain_syncer(tmp_path)
    attempts: list[str] = []

    real = os.fsync

    def failing(fd: int) -> None:
        # Only the background syncer's fsyncs fail: the update after the attempt syncs inline.
        if threading.current_thread().name == "runcycles-journal-sync":
            raise OSError(5, "I/O error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing)

    def settle(record: Record) -> RetryLater:
        attempts.append(record.reservation_id)
        return RetryLater(at=None)

    report = journal.settle(_record("r6"), settle)
    assert attempts == ["r6"]
    assert report.journal_errors and "I/O error" in report.journal_errors[0]


def test_sync_mode_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sync"):
        CommitJournal(tmp_path, server_url="http://s", tenant="t", sync="later")  # type: ignore[arg-type]
