"""journal: durable, atomic, partitioned, quarantining, exactly-once commit journal."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from runcycles_core import journal as journal_module
from runcycles_core.journal import (
    CommitJournal,
    GiveUp,
    JournalError,
    Outcome,
    Record,
    Rejected,
    RetryLater,
    Settled,
    SwitchToEvent,
    record_filename,
)
from runcycles_server_lite.testing import spawn, start_timeout, stop_group, wait_ready

SERVER = "http://127.0.0.1:7878"
TENANT = "acme"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(directory: Path, clock: Clock | None = None, **kw: str) -> CommitJournal:
    return CommitJournal(
        directory,
        server_url=kw.get("server_url", SERVER),
        tenant=kw.get("tenant", TENANT),
        clock=clock or Clock(),
    )


def rec(rid: str = "res-1", **kw: object) -> Record:
    data: dict[str, object] = {
        "reservation_id": rid,
        "idempotency_key": f"commit-{rid}",
        "amount": 1234,
        "unit": "USD_MICROCENTS",
        "metrics": {"tokens_input": 10, "tokens_output": 20},
        "metadata": {"price_source": "genai-prices"},
        "event": {
            "idempotency_key": f"commit-{rid}",
            "subject": {"tenant": TENANT},
            "action": {"kind": "llm.completion", "name": "gpt-4o"},
            "actual": {"unit": "USD_MICROCENTS", "amount": 1234},
        },
        "created_at": 1_800_000_000.0,
    }
    data.update(kw)
    return Record.model_validate(data)


def on_disk(j: CommitJournal, rid: str) -> dict[str, object] | None:
    """Read a record file directly (no lock), as an outside observer would."""
    path = j.path / record_filename(rid)
    return json.loads(path.read_bytes()) if path.exists() else None


def test_write_crash_restart_replays_exactly_once(tmp_path: Path) -> None:
    """CR-DURABLE-001 (journal half): record survives restart, replays once, then is removed."""
    first = make(tmp_path)
    first.write(rec("res-1"))
    first.write(rec("res-2", created_at=1_800_000_001.0))
    del first  # the "crash": only the files remain

    restarted = make(tmp_path)
    assert [r.reservation_id for r in restarted.pending()] == ["res-1", "res-2"]
    assert restarted.pending()[0] == rec("res-1")

    calls: list[Record] = []

    def settle(record: Record) -> Outcome:
        calls.append(record)
        return Settled()

    report = restarted.replay(settle)
    assert [r.reservation_id for r in calls] == ["res-1", "res-2"]
    assert calls[0].idempotency_key == "commit-res-1"  # the stored key is reused
    assert report.settled == ["res-1", "res-2"]
    assert restarted.pending() == []
    assert make(tmp_path).replay(settle).settled == []
    assert len(calls) == 2
    # Settled records leave no lock files behind.
    assert list((restarted.path / "locks").iterdir()) == []


def test_filenames_are_sha256_of_exact_utf8_id(tmp_path: Path) -> None:
    """CR-DURABLE-007: the name is sha256 of the exact UTF-8 id; distinct ids, distinct files."""
    j = make(tmp_path)
    ids = ["res/1", "res_1", "res:1", "rés-1", "RES/1"]
    for rid in ids:
        j.write(rec(rid))
    names = sorted(p.name for p in j.path.glob("v2-*.json"))
    want = sorted(f"v2-{hashlib.sha256(rid.encode('utf-8')).hexdigest()}.json" for rid in ids)
    assert names == want
    assert {r.reservation_id for r in j.pending()} == set(ids)


def test_permissions_are_private_even_with_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        j = make(tmp_path / "journal")
        j.write(rec())
        j.update("res-1", attempts=3)
    finally:
        os.umask(old)
    for directory in (j.path, j.path / "locks", j.path / "quarantine"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    record_file = j.path / record_filename("res-1")
    assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
    # Atomic writes leave no temp files behind.
    assert sorted(p.name for p in j.path.iterdir()) == sorted(
        ["locks", "quarantine", record_file.name]
    )


def test_partitioned_by_server_and_tenant_and_stable_across_key_rotation(tmp_path: Path) -> None:
    """CR-DURABLE-004 (journal half): the partition depends on server + tenant, never a key."""
    make(tmp_path).write(rec("mine"))
    other_tenant = make(tmp_path, tenant="globex")
    other_server = make(tmp_path, server_url="http://127.0.0.1:9999")
    assert other_tenant.pending() == []
    assert other_server.pending() == []
    assert len({make(tmp_path).path, other_tenant.path, other_server.path}) == 3
    # A restart with a rotated API key builds the journal from server + tenant only, so it finds
    # the record (trailing slash on the URL is not a different server).
    rotated = make(tmp_path, server_url=SERVER + "/")
    assert [r.reservation_id for r in rotated.pending()] == ["mine"]
    # Nothing credential-like is stored: the record holds only settlement data.
    assert set(on_disk(rotated, "mine") or {}) == set(Record.model_fields)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"reservation_id": "x", "idempo', "not valid JSON"),  # truncated
        (b"\x00\xff\xfe garbage", "not valid JSON"),
        (b"[1, 2, 3]", "invalid record"),
        (b"", "not valid JSON"),
    ],
)
def test_corrupt_records_are_quarantined_and_others_replay(
    tmp_path: Path, content: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """CR-DURABLE-005: corrupt/truncated records are quarantined and reported."""
    j = make(tmp_path)
    j.write(rec("good"))
    bad = j.path / record_filename("bad")
    bad.write_bytes(content)
    settled: list[str] = []
    with caplog.at_level(logging.ERROR, logger="runcycles_core.journal"):
        report = make(tmp_path).replay(lambda r: settled.append(r.reservation_id) or Settled())
    assert settled == ["good"]
    assert [name for name, _ in report.quarantined] == [bad.name]
    assert reason in report.quarantined[0][1]
    assert not bad.exists()
    (moved,) = j.quarantined()
    assert moved.read_bytes() == content  # kept for a human, never silently dropped
    note = json.loads(moved.with_suffix(".reason.json").read_text())
    assert note["original"] == bad.name
    assert reason in note["reason"]
    assert any("quarantined" in m for m in caplog.messages)


def test_unsupported_version_and_misnamed_records_are_quarantined(tmp_path: Path) -> None:
    """CR-DURABLE-005: unsupported-version records are quarantined; valid ones still replay."""
    j = make(tmp_path)
    future = rec("future").model_dump()
    future["version"] = 3
    (j.path / record_filename("future")).write_text(json.dumps(future))
    # A valid record stored under another id's name must not be trusted.
    (j.path / record_filename("elsewhere")).write_text(rec("moved").model_dump_json())
    j.write(rec("ok"))
    assert [r.reservation_id for r in j.pending()] == ["ok"]
    reasons = sorted(
        json.loads(p.with_suffix(".reason.json").read_text())["reason"] for p in j.quarantined()
    )
    assert len(reasons) == 2
    assert any("unsupported record version 3" in r for r in reasons)
    assert any("does not match" in r for r in reasons)


def test_retry_later_persists_not_before_and_replay_waits(tmp_path: Path) -> None:
    """CR-DURABLE-003 (journal half): the 429 floor is persisted and honoured after restart."""
    clock = Clock()
    j = make(tmp_path, clock)
    j.write(rec())
    report = j.replay(lambda r: RetryLater(at=clock.now + 30, reason="429 Retry-After: 30"))
    assert report.retry_later == ["res-1"]
    stored = on_disk(j, "res-1")
    assert stored is not None
    assert stored["next_attempt_at"] == clock.now + 30
    assert stored["attempts"] == 1
    assert stored["last_error"] == "429 Retry-After: 30"

    # Restart before the Retry-After time: no settlement attempt.
    early = Clock(clock.now + 10)
    calls: list[Record] = []
    report = make(tmp_path, early).replay(lambda r: calls.append(r) or Settled())
    assert calls == []
    assert report.not_due == ["res-1"]

    # A later outcome can never move the server's floor earlier.
    late = Clock(clock.now + 31)
    make(tmp_path, late).replay(lambda r: RetryLater(at=clock.now + 5))
    assert (on_disk(j, "res-1") or {})["next_attempt_at"] == clock.now + 30

    report = make(tmp_path, late).replay(lambda r: calls.append(r) or Settled())
    assert [c.attempts for c in calls] == [2]
    assert report.settled == ["res-1"]
    assert j.pending() == []


def test_switch_to_event_is_durable_before_event_attempt(tmp_path: Path) -> None:
    """CR-DURABLE-002 (journal half): event mode is persisted before the event attempt."""
    j = make(tmp_path)
    j.write(rec())
    seen: list[tuple[str, object]] = []

    class Killed(BaseException):
        pass

    def settle(record: Record) -> Outcome:
        seen.append((record.mode, (on_disk(j, record.reservation_id) or {}).get("mode")))
        if record.mode == "commit":
            return SwitchToEvent("410 RESERVATION_EXPIRED")
        raise Killed  # the process dies right after the mode switch, before the event lands

    with pytest.raises(Killed):
        j.replay(settle)
    assert seen == [("commit", "commit"), ("event", "event")]

    restarted = make(tmp_path)
    (pending,) = restarted.pending()
    assert pending.mode == "event"
    assert pending.idempotency_key == "commit-res-1"
    modes: list[str] = []
    report = restarted.replay(lambda r: modes.append(r.mode) or Settled())
    assert modes == ["event"]  # straight to the event, same key; no commit retried
    assert report.settled == ["res-1"]
    assert restarted.pending() == []


def test_switch_to_event_without_payload_or_twice_quarantines(tmp_path: Path) -> None:
    j = make(tmp_path)
    j.write(rec("no-event", event=None))
    j.write(rec("loop"))
    report = j.replay(lambda r: SwitchToEvent())
    assert sorted(reason.split(": ")[-1] for _, reason in report.quarantined) == [
        "already in event mode",
        "no event payload",
    ]
    assert j.pending() == []


def test_give_up_quarantines_and_rejected_deletes(tmp_path: Path) -> None:
    j = make(tmp_path)
    j.write(rec("hopeless"))
    j.write(rec("finalized"))
    outcomes: dict[str, Outcome] = {
        "hopeless": GiveUp("400 UNIT_MISMATCH"),
        "finalized": Rejected("409 RESERVATION_FINALIZED"),
    }
    report = j.replay(lambda r: outcomes[r.reservation_id])
    assert report.rejected == ["finalized"]
    assert report.quarantined == [(record_filename("hopeless"), "gave up: 400 UNIT_MISMATCH")]
    assert j.pending() == []
    (moved,) = j.quarantined()
    assert Record.model_validate_json(moved.read_bytes()).reservation_id == "hopeless"


def test_callback_exception_keeps_record(tmp_path: Path) -> None:
    j = make(tmp_path)
    j.write(rec())

    def boom(record: Record) -> Outcome:
        raise ConnectionError("server down")

    report = j.replay(boom)
    assert report.failed == [("res-1", "ConnectionError('server down')")]
    (kept,) = j.pending()
    assert kept.attempts == 1
    assert kept.last_error == "ConnectionError('server down')"


def test_update_and_mark_done(tmp_path: Path) -> None:
    j = make(tmp_path)
    j.write(rec())
    updated = j.update("res-1", next_attempt_at=123.0, attempts=2)
    assert (updated.next_attempt_at, updated.attempts) == (123.0, 2)
    assert make(tmp_path).get("res-1") == updated
    with pytest.raises(KeyError):
        j.update("missing", attempts=1)
    with pytest.raises(ValueError, match="reservation_id"):
        j.update("res-1", reservation_id="other")
    assert j.mark_done("res-1") is True
    assert j.mark_done("res-1") is False
    assert j.get("res-1") is None


def test_settle_journals_before_first_request_and_excludes_replayers(tmp_path: Path) -> None:
    j = make(tmp_path)
    other = make(tmp_path)
    observed: list[object] = []

    def settle(record: Record) -> Outcome:
        # The record is durable before the request would leave the process...
        observed.append(on_disk(j, record.reservation_id))
        # ...and a concurrent replayer (another worker) must not settle it too.
        box: list[object] = []
        t = threading.Thread(target=lambda: box.append(other.replay(lambda r: Settled())))
        t.start()
        t.join()
        observed.append(box[0])
        return Settled()

    report = j.settle(rec(), settle)
    assert observed[0] == json.loads(rec().model_dump_json())
    assert observed[1].busy == [record_filename("res-1")]  # type: ignore[attr-defined]
    assert observed[1].settled == []  # type: ignore[attr-defined]
    assert report.settled == ["res-1"]
    assert j.pending() == []


def test_settle_still_attempts_when_journal_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = make(tmp_path)

    def disk_full(path: Path, data: bytes, **_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module, "_atomic_write", disk_full)
    calls: list[str] = []
    report = j.settle(rec(), lambda r: calls.append(r.reservation_id) or Settled())
    assert calls == ["res-1"]
    assert report.settled == ["res-1"]
    assert len(report.journal_errors) == 1
    assert "No space left" in report.journal_errors[0]
    with pytest.raises(JournalError):
        j.write(rec("other"))


def test_settle_exception_keeps_record_and_propagates(tmp_path: Path) -> None:
    j = make(tmp_path)

    def boom(record: Record) -> Outcome:
        raise TimeoutError("ambiguous")

    with pytest.raises(TimeoutError):
        j.settle(rec(), boom)
    (kept,) = make(tmp_path).pending()
    assert kept.attempts == 1


def test_legacy_names_migrate_without_clobbering_collisions(tmp_path: Path) -> None:
    """CR-DURABLE-007: matching legacy records migrate; a colliding legacy file is never deleted."""
    j = make(tmp_path)
    # "res/1" and "res:1" sanitize to the same legacy name; the file holds "res/1".
    legacy = j.path / "res_1.json"
    legacy.write_text(rec("res/1").model_dump_json())
    assert j.get("res:1") is None
    assert legacy.exists()  # stored id differs: never deleted for another id
    migrated = j.get("res/1")
    assert migrated is not None
    assert migrated.reservation_id == "res/1"
    assert not legacy.exists()
    assert (j.path / record_filename("res/1")).exists()

    # Replay migrates whatever legacy files remain before settling.
    (j.path / "res_2.json").write_text(rec("res?2").model_dump_json())
    settled: list[str] = []
    report = j.replay(lambda r: settled.append(r.reservation_id) or Settled())
    assert sorted(settled) == ["res/1", "res?2"]
    assert report.quarantined == []
    assert sorted(p.name for p in j.path.iterdir()) == ["locks", "quarantine"]


def test_stale_temp_files_are_cleaned(tmp_path: Path) -> None:
    clock = Clock(time.time())
    j = make(tmp_path, clock)
    stale = j.path / ".tmp-stale"
    fresh = j.path / ".tmp-fresh"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(stale, (clock.now - 7200, clock.now - 7200))
    j.replay(lambda r: Settled())
    assert not stale.exists()
    assert fresh.exists()  # may be another process's write in flight


def test_concurrent_thread_replayers_settle_each_record_once(tmp_path: Path) -> None:
    """CR-DURABLE-006 (journal half): independent workers, each record settled once."""
    ids = [f"res-{i}" for i in range(40)]
    seed = make(tmp_path)
    for rid in ids:
        seed.write(rec(rid))
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(4)

    def settle(record: Record) -> Outcome:
        with lock:
            counts[record.reservation_id] += 1
        time.sleep(0.002)  # widen the window in which others try the same record
        return Settled()

    def worker() -> None:
        journal = make(tmp_path)  # independently constructed worker
        start.wait()
        journal.replay(settle)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == Counter(dict.fromkeys(ids, 1))
    assert seed.pending() == []


def test_lock_on_a_deleted_lock_file_is_not_trusted(tmp_path: Path) -> None:
    # A waits holding the lock of a record that does not exist, so A removes the lock file on
    # release. B is already blocked on the old file: after A, B must re-lock the live file, or
    # a third worker C could lock a fresh file and both would think they own the record.
    j = make(tmp_path)
    name = record_filename("gone")
    b_has_lock = threading.Event()
    release_b = threading.Event()
    a_ctx = j._locked(name, blocking=True)
    assert a_ctx.__enter__() is True

    def b() -> None:
        with make(tmp_path)._locked(name, blocking=True) as held:
            assert held
            b_has_lock.set()
            release_b.wait(5)

    t = threading.Thread(target=b)
    t.start()
    time.sleep(0.2)  # B is now blocked in flock on A's lock file
    a_ctx.__exit__(None, None, None)  # A releases and unlinks the lock file
    assert b_has_lock.wait(5)
    with make(tmp_path)._locked(name, blocking=False) as c_held:
        assert c_held is False  # C sees B's lock
    release_b.set()
    t.join()


WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from runcycles_core.journal import CommitJournal, Settled

    root, log, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    journal = CommitJournal(root, server_url=sys.argv[4], tenant=sys.argv[5])
    Path(sys.argv[6]).touch()  # imported and built: ready for the go
    while not go.exists():
        time.sleep(0.001)

    def settle(record):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, (record.reservation_id + "\\n").encode())
        os.close(fd)
        time.sleep(0.002)
        return Settled()

    report = journal.replay(settle)
    print(len(report.settled), len(report.busy))
    """
)


def test_concurrent_process_replayers_settle_each_record_once(tmp_path: Path) -> None:
    """CR-DURABLE-006 (journal half): independent child processes, each record settled once."""
    root = tmp_path / "journal"
    ids = [f"res-{i}" for i in range(60)]
    seed = make(root)
    for rid in ids:
        seed.write(rec(rid))
    log = tmp_path / "settled.log"
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(3)]
    procs = [
        spawn(
            [sys.executable, "-c", WORKER, str(root), str(log), str(go), SERVER, TENANT, str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    try:
        # Every worker has imported and built its journal (or died: its stderr is shown below).
        wait_ready(
            lambda: all(
                r.exists() or p.poll() is not None for r, p in zip(ready, procs, strict=True)
            ),
            "the replay workers",
        )
        go.touch()
        outputs = [p.communicate(timeout=start_timeout()) for p in procs]
    finally:
        for p in procs:
            stop_group(p)
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    settled = log.read_text().split()
    assert Counter(settled) == Counter(dict.fromkeys(ids, 1))
    assert sum(int(out.split()[0]) for out, _ in outputs) == len(ids)
    assert seed.pending() == []


async def test_async_replay_concurrent_tasks_settle_once(tmp_path: Path) -> None:
    ids = [f"res-{i}" for i in range(20)]
    seed = make(tmp_path)
    for rid in ids:
        seed.write(rec(rid))
    counts: Counter[str] = Counter()

    async def settle(record: Record) -> Outcome:
        counts[record.reservation_id] += 1
        await asyncio.sleep(0.001)
        return Settled() if record.reservation_id != "res-3" else RetryLater(reason="429")

    reports = await asyncio.gather(make(tmp_path).areplay(settle), make(tmp_path).areplay(settle))
    assert counts == Counter(dict.fromkeys(ids, 1))
    assert sum(len(r.settled) for r in reports) == 19
    assert [r.reservation_id for r in seed.pending()] == ["res-3"]

    async def finish(record: Record) -> Outcome:
        return Settled()

    report = await seed.asettle(rec("new"), finish)
    assert report.settled == ["new"]


class JournalMachine(RuleBasedStateMachine):
    """Any interleaving of write/update/mark_done/replay: nothing both settled and pending."""

    ids = st.sampled_from(["a", "b", "c/d", "é"])
    outcomes = st.sampled_from(
        ["settled", "rejected", "retry", "retry-future", "give-up", "switch", "raise"]
    )

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.clock = Clock()
        self.journal = make(self.dir, self.clock)
        self.model: dict[str, Record] = {}
        self.finished: set[str] = set()  # settled, rejected or quarantined since last write

    def teardown(self) -> None:
        shutil.rmtree(self.dir)

    @rule(rid=ids)
    def write(self, rid: str) -> None:
        record = rec(rid)
        self.journal.write(record)
        self.model[rid] = record
        self.finished.discard(rid)

    @rule(rid=ids)
    def update(self, rid: str) -> None:
        if rid in self.model:
            self.model[rid] = self.journal.update(rid, attempts=self.model[rid].attempts + 1)
        else:
            with pytest.raises(KeyError):
                self.journal.update(rid, attempts=1)

    @rule(rid=ids)
    def mark_done(self, rid: str) -> None:
        assert self.journal.mark_done(rid) is (rid in self.model)
        if self.model.pop(rid, None) is not None:
            self.finished.add(rid)

    @rule(seconds=st.integers(0, 100))
    def advance(self, seconds: int) -> None:
        self.clock.now += seconds

    @rule(choice=st.lists(outcomes, min_size=1, max_size=6))
    def replay(self, choice: list[str]) -> None:
        calls: list[str] = []

        def settle(record: Record) -> Outcome:
            assert record.reservation_id not in self.finished
            assert record.reservation_id in self.model
            kind = choice[len(calls) % len(choice)]
            calls.append(record.reservation_id)
            result: dict[str, Outcome] = {
                "settled": Settled(),
                "rejected": Rejected("finalized"),
                "retry": RetryLater(),
                "retry-future": RetryLater(at=self.clock.now + 50),
                "give-up": GiveUp("unclassifiable"),
                "switch": SwitchToEvent(),
            }
            if kind == "raise":
                raise ConnectionError("down")
            return result[kind]

        report = self.journal.replay(settle)
        for rid in [*report.settled, *report.rejected]:
            self.model.pop(rid)
            self.finished.add(rid)
        for name, _ in report.quarantined:
            (rid,) = [r for r in self.model if record_filename(r) == name]
            self.model.pop(rid)
            self.finished.add(rid)
        for rid in self.model:
            # Anything the journal still has was due-skipped, retried or failed: still pending.
            assert rid not in report.settled

    @invariant()
    def settled_and_pending_are_disjoint(self) -> None:
        pending = {r.reservation_id for r in self.journal.pending()}
        assert pending == set(self.model)
        assert not pending & self.finished


JournalMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_journal_interleavings = JournalMachine.TestCase
