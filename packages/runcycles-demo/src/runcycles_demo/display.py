"""The live board (spend ticking per run) and the closing table."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

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


def _state(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


def _rate(spent: int, seconds: float) -> str:
    return usd(int(spent / seconds * 60), 2) + "/min" if seconds > 0.5 and spent else ""


class LiveBoard:
    """A rich renderable redrawn by ``rich.live.Live``: one row per run (and per agent of the
    parallel run), with calls, the context each call resends, spend and budget use."""

    def __init__(self, runs: Sequence[Run], title: str) -> None:
        self.runs = runs
        self.title = title
        self.phase = ""

    def _row(
        self, table: Table, label: str, tracks: Sequence[Track], run: Run, *, sub: bool
    ) -> None:
        now = time.monotonic()
        spent = sum(t.spent for t in tracks)
        seconds = max((t.elapsed(now) for t in tracks), default=0.0)
        state = tracks[0].state if len(tracks) == 1 else run.state
        bar: RenderableType = ""
        if run.budget and not sub:
            bar = ProgressBar(total=run.budget, completed=min(spent, run.budget), width=24)
        table.add_row(
            Text(label, style="dim" if sub else "bold"),
            _state(state),
            str(sum(t.calls for t in tracks)),
            f"{max(t.context_tokens for t in tracks):,}" if tracks else "",
            Text(usd(spent, 4), style="bold" if not sub else ""),
            _rate(spent, seconds),
            f"{seconds:5.1f} s",
            bar,
            Text(tracks[0].stopped_by if len(tracks) == 1 else run.stopped_by, style="dim"),
        )

    def __rich__(self) -> RenderableType:
        table = Table(box=box.SIMPLE_HEAVY, expand=False, title=self.title, title_justify="left")
        for col, justify in (
            ("run", "left"),
            ("state", "left"),
            ("calls", "right"),
            ("context", "right"),
            ("spend", "right"),
            ("rate", "right"),
            ("time", "right"),
            ("budget used", "left"),
            ("stopped by", "left"),
        ):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for run in self.runs:
            self._row(table, run.label, run.tracks, run, sub=False)
            if len(run.tracks) > 1:
                for t in run.tracks:
                    self._row(table, f"  {t.name}", [t], run, sub=True)
        return Group(table, Text(self.phase, style="italic"))


def closing_table(runs: Sequence[Run], *, plain: bool) -> Table:
    """run, calls, spend (priced by core), time, stopped by, and the server's ledger."""
    table = Table(
        box=box.ASCII if plain else box.ROUNDED,
        title="runcycles demo: the same runaway agent, three ways",
        title_justify="left",
    )
    table.add_column("run")
    table.add_column("calls", justify="right")
    table.add_column("spend", justify="right")
    table.add_column("time", justify="right")
    table.add_column("stopped by")
    table.add_column("ledger spent", justify="right")
    table.add_column("ledger reserved", justify="right")
    table.add_column("ledger remaining", justify="right")
    for run in runs:
        led = run.ledger
        table.add_row(
            run.label,
            str(run.calls),
            usd(run.spent),
            f"{run.elapsed():.1f} s",
            run.stopped_by,
            usd(led.spent) if led else "-",
            usd(led.reserved) if led else "-",
            usd(led.remaining) if led else "-",
        )
        if len(run.tracks) > 1:
            for t in run.tracks:
                table.add_row(
                    f"  {t.name}",
                    str(t.calls),
                    usd(t.spent),
                    f"{t.elapsed():.1f} s",
                    t.stopped_by,
                    "",
                    "",
                    "",
                )
    return table
