"""The chart: cumulative spend against time for the three runs, written to a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from runcycles_core.pricing import MICROCENTS_PER_USD

from .report import HOURS_PER_MONTH, Run, usd

__all__ = ["write_chart"]

_COLORS = ["#d62728", "#2ca02c", "#1f77b4", "#9467bd"]


def _dollars(microcents: int) -> float:
    return float(Decimal(microcents) / MICROCENTS_PER_USD)


def write_chart(path: Path, runs: Sequence[Run], budget: int) -> Path:
    """Two panels: every run at full scale (the unguarded one dwarfs the rest), and a zoom on
    the budget line where the guarded runs stop. Returns the absolute path written."""
    # A bare Figure renders with Agg and never touches pyplot's global state or a display;
    # imported here because matplotlib is slow to import and only needed at the end.
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    limit = _dollars(budget)
    fig = Figure(figsize=(13, 5.2), dpi=110)
    full, zoom = fig.subplots(1, 2)
    for i, run in enumerate(runs):
        points = run.cumulative()
        if len(points) < 2:
            continue
        xs = [t for t, _ in points]
        ys = [_dollars(v) for _, v in points]
        color = _COLORS[i % len(_COLORS)]
        label = f"{run.label}: {run.calls} calls, ${ys[-1]:,.2f}"
        full.step(xs, ys, where="post", color=color, linewidth=2, label=label)
        stop = f"{run.label}: no budget, keeps going"
        if run.budget is not None:
            denied = "denied" in run.stopped_by
            why = f"next reserve denied at ${ys[-1]:,.2f}" if denied else run.stopped_by
            stop = f"{run.label}: {why}"
        zoom.step(xs, ys, where="post", color=color, linewidth=2, label=stop)
        if run.budget is not None:
            for ax in (full, zoom):
                ax.plot(xs[-1], ys[-1], marker="X", markersize=10, color=color)
            continue
        per_hour = run.per_hour()
        if per_hour:
            # Below the line, where the full-scale panel is empty.
            full.text(
                0.97,
                0.22,
                f"unguarded: {usd(per_hour, 0)} per hour,\n"
                f"{usd(per_hour * HOURS_PER_MONTH, 0)} per month",
                transform=full.transAxes,
                ha="right",
                fontsize=10,
                color=color,
            )
    for ax in (full, zoom):
        ax.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"budget ${limit:,.2f}")
        ax.set_xlabel("seconds since the run started")
        ax.set_ylabel("cumulative spend (gpt-4o prices)")
        ax.yaxis.set_major_formatter(StrMethodFormatter("${x:,.2f}"))
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    full.set_title("All runs")
    zoom.set_title("Zoom on the budget: the guarded runs stop at the line")
    guarded_end = max((r.elapsed() for r in runs if r.budget is not None and r.calls), default=1.0)
    # Just past the last guarded run's stop: beyond it only the unguarded line goes on.
    zoom.set_xlim(0, max(guarded_end * 1.06, 0.5))
    zoom.set_ylim(0, limit * 1.3)
    full.legend(loc="upper left", fontsize=8)
    zoom.legend(loc="best", fontsize=8)
    fig.suptitle(
        "The same looping LangChain agent: unguarded vs runcycles budget enforcement",
        fontsize=12,
    )
    fig.tight_layout()
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
