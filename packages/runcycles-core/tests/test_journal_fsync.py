"""What the journal pays in fsyncs: a durable write syncs the record and its directory; a
deletion syncs nothing (a resurrected settled record replays idempotently); a non-durable
journal never syncs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runcycles_core.journal import CommitJournal, Record


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
    calls = _count_fsyncs(monkeypatch)
    journal.write(_record("r1"))
    assert len(calls) == 2
    calls.clear()
    assert journal.mark_done("r1")
    assert calls == []
    assert journal.pending() == []


def test_non_durable_journal_never_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = CommitJournal(tmp_path, server_url="http://s", tenant="t", durable=False)
    calls = _count_fsyncs(monkeypatch)
    journal.write(_record("r2"))
    assert [r.reservation_id for r in journal.pending()] == ["r2"]
    assert journal.mark_done("r2")
    assert calls == []
