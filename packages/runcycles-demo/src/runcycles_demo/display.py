"""The live board (spend ticking per run) and the closing table."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich import box
from rich.console import Console, ConsoleOptions, Group, JustifyMethod, RenderableType, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .ledger import Ledger
from .report import Run, usd
from .runs import Track

__all__ = ["LiveBoard", "closing_table"]

_STATE_STYLE = {
    "waiting": "dim",
    "running": "bold yellow",
    "denied": "bold green",
    "capped": "bold red",
    "finished": "bold blue",
    "error": "bold magenta",
}


_COLUMNS: dict[str, JustifyMethod] = {
    "run": "left",
    "state": "left",
    "calls": "right",
    "context": "right",
    "spend": "right",
    "ledger": "right",
    "rate": "right",
    "time": "right",
    "budget used": "left",
    "stopped by": "left",
}


_CLOSING_COLUMNS: dict[str, JustifyMethod] = {
    "run": "left",
    "calls": "right",
    "spend": "right",
    "time": "right",
    "stopped by": "left",
    "ledger spent": "right",
    "reserved": "right",
    "remaining": "right",
}


def _state(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


def _rate(spent: int, seconds: float) -> str:
    return usd(int(spent / seconds * 60), 2) + "/min" if seconds > 0.5 and spent else ""


class LiveBoard:
    """A rich renderable redrawn by ``rich.live.Live``: one row per run (and per agent of the
    parallel run), with calls, the context each call resends, spend as priced by the client and
    as the server's ledger reports it, and budget use."""

    def __init__(self, runs: Sequence[Run], title: str) -> None:
        self.runs = runs
        self.title = title
        self.phase = ""

    def _cells(
        self, label: str, tracks: Sequence[Track], run: Run, *, sub: bool, bar_width: int
    ) -> dict[str, RenderableType]:
        now = time.monotonic()
        spent = sum(t.spent for t in tracks)
        seconds = max((t.elapsed(now) for t in tracks), default=0.0)
        state = tracks[0].state if len(tracks) == 1 else run.state
        ledger = run.ledger or run.live_ledger
        bar: RenderableType = ""
        if run.budget and not sub:
            bar = ProgressBar(total=run.budget, completed=min(spent, run.budget), width=bar_width)
        return {
            "run": Text(label, style="dim" if sub else "bold"),
            "state": _state(state),
            "calls": str(sum(t.calls for t in tracks)),
            "context": f"{max(t.context_tokens for t in tracks):,}" if tracks else "",
            "spend": Text(usd(spent, 4), style="bold" if not sub else ""),
            "ledger": usd(ledger.spent, 4) if ledger and not sub else "",
            "rate": _rate(spent, seconds),
            "time": f"{seconds:5.1f} s",
            "budget used": bar,
            "stopped by": Text(
                tracks[0].stopped_by if len(tracks) == 1 else run.stopped_by, style="dim"
            ),
        }

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Columns go, least useful first, so that a row never wraps in a narrow terminal.
        width = options.max_width
        columns = list(_COLUMNS)
        if width < 150:
            columns.remove("stopped by")  # the state says it in one word
        if width < 100:
            for col in ("rate", "context", "time"):
                columns.remove(col)
        bar_width = 24 if width >= 150 else 12
        table = Table(box=box.SIMPLE_HEAVY, expand=False, title=self.title, title_justify="left")
        for col in columns:
            table.add_column(col, justify=_COLUMNS[col], no_wrap=True)
        for run in self.runs:
            rows = [(run.label, list(run.tracks), False)]
            if len(run.tracks) > 1:
                rows += [(f"  {t.name}", [t], True) for t in run.tracks]
            for label, tracks, sub in rows:
                cells = self._cells(label, tracks, run, sub=sub, bar_width=bar_width)
                table.add_row(*(cells[c] for c in columns))
        yield Group(table, Text(self.phase, style="italic"))


def closing_table(runs: Sequence[Run], *, plain: bool, width: int = 200) -> Table:
    """run, calls, spend (priced by core), time, stopped by, and the server's ledger.

    Under 120 columns it drops ``time`` and ``reserved`` (the summary lines repeat the ledger),
    shows dollars to four places (the summary lines give them to the microcent) and says what
    stopped a run in one word (a denial's error code), so that an 80-column row never wraps.
    """
    narrow = width < 120
    places = 4 if narrow else 8
    table = Table(
        box=box.ASCII if plain else box.ROUNDED,
        title="runcycles demo: the same runaway agent, three ways",
        title_justify="left",
        caption="ledger columns: the server's own balance of the run's tenant",
        caption_justify="left",
    )
    columns = [c for c in _CLOSING_COLUMNS if not (narrow and c in ("time", "reserved"))]
    for name in columns:
        header = "ledger" if narrow and name == "ledger spent" else name
        # Only the reason may wrap, so that no number is ever split across lines.
        table.add_column(header, justify=_CLOSING_COLUMNS[name], no_wrap=name != "stopped by")

    def add(
        label: str, tracks: Sequence[Track], run: Run, led: Ledger | None, none: str = ""
    ) -> None:
        one = tracks[0] if len(tracks) == 1 else None
        cells = {
            "run": label,
            "calls": str(sum(t.calls for t in tracks)),
            "spend": usd(sum(t.spent for t in tracks), places),
            "time": f"{(one.elapsed() if one else run.elapsed()):.1f} s",
            "stopped by": _short_reason(one or run)
            if narrow
            else (one.stopped_by if one else run.stopped_by),
            "ledger spent": usd(led.spent, places) if led else none,
            "reserved": usd(led.reserved, places) if led else none,
            "remaining": usd(led.remaining, places) if led else none,
        }
        table.add_row(*(cells[c] for c in columns))

    for run in runs:
        # "-": the unguarded run has no ledger; agent rows leave it to their run's row.
        add(run.label, run.tracks, run, run.ledger, "-")
        if len(run.tracks) > 1:
            for t in run.tracks:
                add(f"  {t.name}", [t], run, None)
    return table


def _short_reason(who: Track | Run) -> str:
    """What stopped a run, in one word: a denial's error code, else the state."""
    reason = who.stopped_by
    return reason.removeprefix("denied: ") if reason.startswith("denied: ") else who.state
