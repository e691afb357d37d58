"""The real ``runcycles-demo`` console script, in a short mode, checked against the ledger.

The demo keeps its store in ``--data-dir``; after it exits, the test reopens that store with a
fresh server-lite and reads the balances itself, so the closing table is checked against the
server's ledger as persisted, not against the demo's own reading of it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from PIL import Image

from runcycles_core import CyclesClient, CyclesConfig
from runcycles_core.models import ReservationStatus
from runcycles_server_lite.embedded import EmbeddedRedis
from runcycles_server_lite.testing import (
    group_members,
    process_group,
    run,
    running_server,
    start_timeout,
)

SCRIPT = Path(sys.executable).with_name("runcycles-demo")
BUDGET = 5_000_000  # $0.05 in µ¢
AGENTS = 3
COLUMNS = ["run", "calls", "spend", "time", "stopped by", "spent", "reserved", "remaining"]


def run_demo(tmp_path: Path, *extra: str, duration: str = "2") -> subprocess.CompletedProcess[str]:
    args = [
        str(SCRIPT),
        "--duration",
        duration,
        "--budget",
        "0.05",
        "--agents",
        str(AGENTS),
        "--no-live",
        "--chart",
        str(tmp_path / "x.png"),
        "--data-dir",
        str(tmp_path / "d"),
        *extra,
    ]
    # Its own process group, stopped as a whole afterwards (the demo starts a server and an
    # embedded store of its own).
    return run(args, capture_output=True, text=True, timeout=start_timeout(240))


def microcents(cell: str) -> int:
    value = Decimal(cell.lstrip("$").replace(",", "")) * 100_000_000
    assert value == value.to_integral_value(), cell
    return int(value)


def closing_rows(stdout: str) -> dict[str, dict[str, str]]:
    """The closing table's rows by run label (the plain output draws it in ASCII)."""
    rows: dict[str, dict[str, str]] = {}
    for line in stdout.splitlines():
        if not line.startswith("| ") or line.startswith("| run "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(COLUMNS), line
        rows[cells[0]] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def persisted_ledger(data_dir: Path, tenant: str) -> tuple[tuple[int, ...], int]:
    """``(allocated, spent, reserved, debt, remaining)`` of ``tenant:<tenant>`` and the number
    of committed reservations, from the store the demo left behind, through a fresh server."""
    with (
        EmbeddedRedis(data_dir / "store") as redis,
        running_server(data_dir / "reopened", redis_url=redis.url) as srv,
    ):
        key = srv.provision(tenant)  # the tenant exists: this only mints a key to read with
        config = CyclesConfig(
            base_url=srv.base_url, api_key=key, tenant=tenant, journal_dir=str(data_dir / "j")
        )
        with CyclesClient(config) as client:
            (b,) = [b for b in client.iter_balances(tenant=tenant) if b.scope == f"tenant:{tenant}"]
            committed = sum(
                1
                for r in client.iter_reservations(tenant=tenant)
                if r.status is ReservationStatus.COMMITTED
            )
    balance = (
        b.allocated.amount if b.allocated else 0,
        b.spent.amount if b.spent else 0,
        b.reserved.amount if b.reserved else 0,
        b.debt.amount if b.debt else 0,
        b.remaining.amount,
    )
    return balance, committed


def test_short_run_holds_and_its_table_matches_the_ledger(tmp_path: Path) -> None:
    done = run_demo(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Enforcement held" in done.stdout
    rows = closing_rows(done.stdout)

    free = rows["1 unguarded"]
    assert int(free["calls"]) > 0
    assert microcents(free["spend"]) > 0
    assert free["stopped by"] == "wall-clock cap (2 s)"
    assert free["spent"] == "-"  # no server involved

    agents = [rows[f"support-bot-{i + 1}"] for i in range(AGENTS)]
    for label, tenant in (("2 guarded", "acme-guarded"), (f"3 parallel x{AGENTS}", "acme-fleet")):
        row = rows[label]
        assert row["stopped by"] == "denied: BUDGET_EXCEEDED", row
        balance, committed = persisted_ledger(tmp_path / "d", tenant)
        allocated, spent, reserved, debt, remaining = balance
        assert committed == int(row["calls"])  # one committed reservation per model call
        assert allocated == BUDGET
        assert (reserved, debt) == (0, 0)
        assert remaining == allocated - spent - reserved - debt
        # The table shows exactly what the persisted ledger holds, and the agents were charged
        # exactly that: never more than the budget.
        assert microcents(row["spend"]) == microcents(row["spent"]) == spent
        assert microcents(row["remaining"]) == remaining
        assert microcents(row["reserved"]) == 0
        assert 0 < spent <= BUDGET

    fleet = rows[f"3 parallel x{AGENTS}"]
    assert sum(microcents(a["spend"]) for a in agents) == microcents(fleet["spend"])
    assert sum(int(a["calls"]) for a in agents) == int(fleet["calls"])
    # Every agent of the fleet was stopped by a denial, not by the cap (an agent may be denied
    # its very first call if the others already hold the rest of the budget).
    assert all(a["stopped by"] == "denied: BUDGET_EXCEEDED" for a in agents)
    assert sum(int(a["calls"]) > 0 for a in agents) >= 1

    chart = tmp_path / "x.png"
    assert f"Chart of cumulative spend vs time: {chart}" in done.stdout
    with Image.open(chart) as img:
        assert img.format == "PNG"
        assert img.width >= 800 and img.height >= 400
        img.verify()


def test_broken_enforcement_exits_non_zero(tmp_path: Path) -> None:
    # The hidden flag runs the "guarded" runs without the plugin: nothing reaches the server's
    # ledger, so the demo must report a mismatch and fail.
    done = run_demo(tmp_path, "--break-enforcement", duration="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ENFORCEMENT FAILED: 2 guarded: ledger mismatch" in done.stdout
    assert "ENFORCEMENT FAILED: 3 parallel x3: ledger mismatch" in done.stdout
    assert "Enforcement FAILED" in done.stdout
    rows = closing_rows(done.stdout)
    assert rows["2 guarded"]["stopped by"] == "wall-clock cap (1 s)"
    assert microcents(rows["2 guarded"]["spent"]) == 0


def test_ctrl_c_prints_what_was_spent_and_exits_130(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground group (the embedded store too): the demo
    stops, says what each run spent so far, leaves no traceback and no process behind."""
    args = [
        str(SCRIPT),
        "--duration",
        "30",
        "--no-live",
        "--chart",
        str(tmp_path / "x.png"),
        "--data-dir",
        str(tmp_path / "d"),
    ]
    with process_group(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + start_timeout(240)
        for line in proc.stdout:  # wait until the unguarded run is spending
            if line.startswith("run 1/3") or time.monotonic() > deadline:
                break
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=start_timeout(60))
        pgid = proc.pid
    assert proc.returncode == 130, out + err
    assert "Interrupted after" in out and "Spent so far:" in out
    assert re.search(r"1 unguarded: [1-9]\d* calls, \$\d", out), out
    assert "Traceback" not in err, err
    assert group_members(pgid) == []
