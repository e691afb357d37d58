"""The process-group helpers every test that starts a process relies on, and the in-process
test server's cleanup when its start fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from runcycles_server_lite import testing
from runcycles_server_lite.testing import (
    group_members,
    process_group,
    run,
    running_server,
    spawn,
    start_timeout,
    stop_group,
    wait_ready,
)

# A parent that ignores SIGTERM with two children that do too: only SIGKILL ends this group.
STUBBORN = "trap '' TERM; (trap '' TERM; sleep 300) & (trap '' TERM; sleep 300) & wait"


def with_cmdline(fragment: str) -> list[int]:
    """Pids of live processes whose command line mentions ``fragment``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if fragment in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_start_timeout_scales_with_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(testing.TIMEOUT_SCALE_ENV, raising=False)
    assert start_timeout() == 120
    assert start_timeout(10) == 10
    monkeypatch.setenv(testing.TIMEOUT_SCALE_ENV, "2.5")
    assert start_timeout(10) == 25
    monkeypatch.setenv(testing.TIMEOUT_SCALE_ENV, "fast")
    with pytest.raises(ValueError, match=testing.TIMEOUT_SCALE_ENV):
        start_timeout()


def test_stop_group_kills_what_ignores_sigterm() -> None:
    proc = spawn(["bash", "-c", STUBBORN])
    wait_ready(lambda: len(group_members(proc.pid)) >= 3, "the stubborn group", proc=proc)
    members = group_members(proc.pid)
    started = time.monotonic()
    stop_group(proc, grace=0.5)
    assert group_members(proc.pid) == []
    assert proc.returncode is not None
    assert time.monotonic() - started < 0.5 + start_timeout(10)
    assert not any(map(alive, members))


def test_group_outlives_its_leader_until_stopped() -> None:
    """The leader exiting is not the end: a child it left in the group is stopped too."""
    with process_group(["bash", "-c", "sleep 300 & echo $!"], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        orphan = int(proc.stdout.readline())
        proc.wait(timeout=start_timeout())
        assert group_members(proc.pid) == [orphan]
    assert group_members(proc.pid) == []


def test_run_stops_the_group_on_timeout_and_after_exit() -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run(["sleep", "300"], timeout=0.5)
    assert time.monotonic() - started < start_timeout(30)
    # A child that exits normally, leaving a background process: gone once run returns.
    done = run(
        ["bash", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert not alive(int(done.stdout))


def test_wait_ready_reports_an_early_exit() -> None:
    with (
        process_group([sys.executable, "-c", "raise SystemExit(3)"]) as proc,
        pytest.raises(RuntimeError, match="child: process exited with status 3"),
    ):
        wait_ready(lambda: False, "child", proc=proc)


def test_failed_test_server_start_leaves_no_store_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)  # the embedded store is what may leak
    data = tmp_path / "d"
    with (
        pytest.raises(RuntimeError, match="not started within 0 s"),
        running_server(data, start_within=0),
    ):
        pass  # pragma: no cover - the start fails
    assert with_cmdline(str(data.resolve())) == [], "the embedded redis-server outlived the start"
