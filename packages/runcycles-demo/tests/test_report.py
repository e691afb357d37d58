"""How the demo judges a guarded run: every way the ledger can disagree fails it.

The real server never produces these states (that is the point), so they are built by hand here;
the end-to-end tests in test_demo.py cover the real runs.
"""

from __future__ import annotations

from collections import Counter

import pytest
from runcycles_demo.ledger import Ledger, Reservations
from runcycles_demo.report import Run, enforcement_failures, usd
from runcycles_demo.runs import Track

BUDGET = 100_000_000


def guarded_run(
    spent: int,
    ledger: Ledger | None,
    state: str = "denied",
    *,
    charged: int | None = None,
    committed: int = 3,
) -> Run:
    track = Track("support-bot", spent=spent, calls=3)
    track.stop(state, "denied: BUDGET_EXCEEDED")
    reservations = Reservations(
        statuses=Counter({"COMMITTED": committed}),
        estimated=2 * spent,
        charged=spent if charged is None else charged,
        per_agent=Counter({"support-bot": committed}),
    )
    return Run("2 guarded", [track], budget=BUDGET, ledger=ledger, reservations=reservations)


def ledger(spent: int, *, reserved: int = 0, debt: int = 0, remaining: int | None = None) -> Ledger:
    left = BUDGET - spent - reserved - debt if remaining is None else remaining
    return Ledger("tenant:t", BUDGET, spent, reserved, debt, left)


def test_a_run_that_held_passes() -> None:
    assert enforcement_failures(guarded_run(99_000_000, ledger(99_000_000))) == []
    assert enforcement_failures(Run("1 unguarded", [Track("a", spent=10**12)])) == []


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (guarded_run(BUDGET + 1, ledger(BUDGET + 1)), "spent $1.00000001 > budget"),
        (guarded_run(5, ledger(4)), "ledger mismatch: server spent $0.00000004 != charged"),
        (guarded_run(5, ledger(5, remaining=BUDGET)), "ledger mismatch: remaining"),
        (guarded_run(5, ledger(5, reserved=7)), "still reserved"),
        (guarded_run(5, None), "no ledger"),
        (guarded_run(5, ledger(5), state="error"), "stopped on an error"),
        (guarded_run(5, ledger(5), charged=6), "reservations charged $0.00000006 != spent"),
        (guarded_run(5, ledger(5), committed=2), "made 3 calls but the server committed 2"),
    ],
)
def test_each_broken_invariant_fails_the_run(run: Run, expected: str) -> None:
    failures = enforcement_failures(run)
    assert any(expected in f for f in failures), failures


def test_usd_is_exact_to_the_microcent() -> None:
    assert usd(1) == "$0.00000001"
    assert usd(123_456_789_012) == "$1,234.56789012"
    assert usd(99_999_999, 2) == "$1.00"


def test_rate_and_budget_crossing_of_a_run() -> None:
    track = Track("support-bot")
    track.started = 100.0
    # Three calls, at 1 s, 2 s and 4 s: 40, 40 and 20 cents.
    for at, total in ((101.0, 40_000_000), (102.0, 80_000_000), (104.0, 100_000_000)):
        track.points.append((at, total))
    track.spent, track.calls, track.ended = 100_000_000, 3, 104.0
    run = Run("1 unguarded", [track])
    assert run.per_hour() == 900 * 100_000_000  # $1 per 4 s
    assert run.crossed(50_000_000) == (2.0, 2)
    assert run.crossed(100_000_000) is None  # reached, not exceeded
    assert Run("x", [Track("idle")]).per_hour() == 0


def test_stop_reasons_of_a_fleet() -> None:
    a, b, c = Track("a"), Track("b"), Track("c")
    a.stop("denied", "denied: BUDGET_EXCEEDED")
    b.stop("denied", "denied: BUDGET_EXCEEDED")
    assert Run("3", [a, b]).stopped_by == "denied: BUDGET_EXCEEDED"
    c.stop("capped", "wall-clock cap (3 s)")
    assert Run("3", [a, b, c]).stopped_by == "1 capped, 2 denied"
