"""Counts (``--large`` for bigger ones) and the fault table printed at the end of the run."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from _harness import Tally

TALLIES: list[Tally] = []


@dataclass(frozen=True)
class Counts:
    clients: int  # concurrent clients during a kill or an outage
    ops: int  # reserve → commit/release cycles per client
    storm_keys: int  # idempotency keys in the retry storm
    storm_copies: int  # concurrent copies of each request
    abandoned: int  # reservations left behind by a crashed client
    large: bool = False  # also the slower variants (the store killed under two workers)


DEFAULT = Counts(clients=20, ops=4, storm_keys=10, storm_copies=20, abandoned=20)
LARGE = Counts(clients=200, ops=15, storm_keys=50, storm_copies=50, abandoned=200, large=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--large", action="store_true", help="larger client and request counts")


@pytest.fixture(scope="session")
def counts(request: pytest.FixtureRequest) -> Counts:
    return LARGE if request.config.getoption("--large") else DEFAULT


@pytest.fixture
def tally_for() -> object:
    def make(fault: str) -> Tally:
        t = Tally(fault)
        TALLIES.append(t)
        return t

    return make


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLIES:
        return
    cols = [
        "fault injected",
        "count",
        "ops acked",
        "acked lost",
        "duplicates",
        "5xx (not 503 in outage)",
        "503 in outage",
    ]
    rows = [
        [t.fault, t.count, t.acked, t.lost, t.duplicates, t.bad_5xx, t.outage_503] for t in TALLIES
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows, strict=True)]
    line = "  ".join
    tr = terminalreporter
    tr.section("chaos: faults and what the ledger kept")
    tr.write_line(line(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in rows:
        tr.write_line(
            line(
                str(x).rjust(w) if i else str(x).ljust(w)
                for i, (x, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    bad = [t for t in TALLIES if not t.zeros_ok()]
    for t in bad:
        tr.write_line(f"FAIL {t.fault}: {'; '.join(t.notes)[:2000]}")
    tr.write_line(
        "must-be-0 columns: acked lost, duplicates, 5xx" + (" -- NOT ALL 0" if bad else ": all 0")
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if any(not t.zeros_ok() for t in TALLIES) and exitstatus == 0:
        session.exitstatus = 1
