"""The live board and the closing table render at any terminal width without cutting numbers."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console
from runcycles_demo.display import LiveBoard, closing_table
from runcycles_demo.ledger import Ledger
from runcycles_demo.report import Run
from runcycles_demo.runs import Track

BUDGET = 100_000_000


def runs() -> list[Run]:
    now = time.monotonic()
    free = Track("support-bot", calls=352, spent=1_055_305_500, context_tokens=12_077)
    free.started = now - 20
    free.stop("capped", "wall-clock cap (20 s)")
    guarded = Track("support-bot", calls=53, spent=96_466_000)
    guarded.started = now - 5
    guarded.stop("denied", "denied: BUDGET_EXCEEDED")
    fleet = [Track(f"support-bot-{i}", calls=20 + i, spent=19_000_000 + i) for i in range(1, 6)]
    for t in fleet:
        t.start()
    ledger = Ledger("tenant:acme-guarded", BUDGET, 96_466_000, 0, 0, 3_534_000)
    return [
        Run("1 unguarded", [free]),
        Run("2 guarded", [guarded], budget=BUDGET, ledger=ledger),
        Run("3 parallel x5", fleet, budget=BUDGET),
    ]


def render(renderable: object, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 120, 200])
def test_live_board_fits_and_shows_every_run(width: int) -> None:
    lines = render(LiveBoard(runs(), "title"), width)
    assert all(len(line) <= width for line in lines)
    text = "\n".join(lines)
    for expected in ("1 unguarded", "$10.5531", "capped", "denied", "running", "support-bot-5"):
        assert expected in text
    # The guarded run's row shows the server's ledger beside the client's tally.
    (row,) = [line for line in lines if "2 guarded" in line]
    assert row.count("$0.9647") == 2
    # One line per run and per agent of the fleet: nothing wrapped.
    assert sum("support-bot-" in line for line in lines) == 5
    assert ("stopped by" in text) == (width >= 150)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_closing_table_never_cuts_a_number(width: int) -> None:
    lines = render(closing_table(runs(), plain=False, width=width), width)
    assert all(len(line) <= width for line in lines)
    text = "\n".join(lines)
    # Narrow: four places (the summary lines carry the microcents), wide: to the microcent.
    amounts = (
        ("$10.5531", "$0.9647", "$0.0353")
        if width < 120
        else ("$10.55305500", "$0.96466000", "$0.03534000")
    )
    for amount in amounts:
        assert amount in text
    # A denial keeps its error code at every width, on one line.
    (row,) = [line for line in lines if "2 guarded" in line]
    assert "BUDGET_EXCEEDED" in row
    assert ("denied: BUDGET_EXCEEDED" in text) == (width >= 120)
