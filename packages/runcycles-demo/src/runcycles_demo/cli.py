"""``runcycles-demo``: the runaway agent, unguarded, guarded, and five at once on one budget."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live

from runcycles_core import CyclesClient
from runcycles_core.pricing import MICROCENTS_PER_USD
from runcycles_langchain import CyclesCallbackHandler

from .chart import write_chart
from .display import LiveBoard, closing_table
from .ledger import (
    Tenant,
    demo_server,
    provision,
    read_ledger,
    read_reservations,
    watch_ledger,
)
from .report import HOURS_PER_MONTH, Run, enforcement_failures, usd
from .runs import Track, run_agent, run_fleet

__all__ = ["main"]

DEFAULT_CHART = Path(tempfile.gettempdir()) / "runcycles-demo-spend.png"


def _budget(text: str) -> int:
    try:
        value = Decimal(text.lstrip("$")) * MICROCENTS_PER_USD
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not value.is_finite() or value <= 0 or value != value.to_integral_value():
        raise argparse.ArgumentTypeError("the budget must be positive, to the microcent")
    return int(value)


def _seconds(text: str) -> float:
    value = float(text)
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _new_dir(text: str) -> Path:
    # The demo provisions fixed tenants: a store from an earlier run already has them.
    path = Path(text)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise argparse.ArgumentTypeError(f"{text} must be a new or empty directory")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="runcycles-demo",
        description=(
            "A LangChain support agent whose quality check never passes loops forever on a "
            "simulated gpt-4o. Watch it burn money unguarded, then stop at its budget under "
            "runcycles, then five copies share one budget without exceeding it. No API keys, "
            "no network: a real runcycles server runs locally on an embedded store."
        ),
    )
    p.add_argument(
        "--duration",
        type=_seconds,
        default=20.0,
        help="wall-clock cap of each run in seconds; all the unguarded run has (default 20)",
    )
    p.add_argument(
        "--budget",
        type=_budget,
        default=_budget("1.00"),
        help="budget in USD of each guarded run (default 1.00)",
    )
    p.add_argument(
        "--agents",
        type=_count,
        default=5,
        help="agents sharing one budget in the parallel run (default 5)",
    )
    p.add_argument(
        "--chart",
        type=Path,
        default=DEFAULT_CHART,
        help=f"where to write the spend chart (PNG; default {DEFAULT_CHART})",
    )
    p.add_argument(
        "--no-live", action="store_true", help="plain output, no live display (for CI logs)"
    )
    p.add_argument(
        "--latency-ms",
        type=_seconds,
        default=50.0,
        help="simulated model latency per call in ms (default 50)",
    )
    p.add_argument(
        "--data-dir",
        type=_new_dir,
        default=None,
        help="keep the server's store (and so its ledger) in this new or empty directory; "
        "default: a temp dir, removed at exit",
    )
    # Runs the "guarded" runs without the plugin: proves the demo notices a failed enforcement.
    p.add_argument("--break-enforcement", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


@contextlib.contextmanager
def _data_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    # A short path: the embedded store listens on a unix socket inside it (~100-byte limit).
    with tempfile.TemporaryDirectory(prefix="rcdemo-") as tmp:
        yield Path(tmp)


class _ExpectedStops(logging.Filter):
    """Drops LangChain's "Error in ... callback" warning for the two ways a run is meant to stop
    (the exception still propagates, and the display shows it as the run's outcome)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("WallClockCap" in message or "BudgetExceededError" in message)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # A terminal's Ctrl-C reaches the embedded store too: the server's background loops and the
    # agents still running would log its disappearance while the demo winds down. That is not
    # news to someone who just pressed Ctrl-C; the summary printed after it is.
    logging.disable(logging.CRITICAL)
    raise KeyboardInterrupt


def _warm_up() -> None:
    # First-call costs (price tables, tokenizer choice, LangChain's lazy imports) would otherwise
    # land on the unguarded run's first call.
    run_agent(Track("warm-up"), duration_s=0.2, latency_s=0)


def _guards(tenant: Tenant, clients: list[CyclesClient]) -> CyclesCallbackHandler:
    client = CyclesClient(tenant.config)
    clients.append(client)
    return CyclesCallbackHandler(client=client, tenant=tenant.id, agent="support-bot")


def _summary(runs: Sequence[Run], budget: int) -> list[str]:
    lines: list[str] = []
    free = runs[0]
    per_hour = free.per_hour()
    if per_hour:
        crossed = free.crossed(budget)
        passed = (
            f"; it passed {usd(budget, 2)} after {crossed[1]} calls, {crossed[0]:.1f} s in"
            if crossed
            else ""
        )
        lines.append(
            f"Unguarded, one agent spent {usd(free.spent, 2)} in {free.elapsed():.1f} s "
            f"({free.calls} calls){passed}. At this rate: {usd(per_hour, 0)} per hour, "
            f"{usd(per_hour * HOURS_PER_MONTH, 0)} per month, until someone notices."
        )
    for run in runs[1:]:
        led = run.ledger
        if led is None:
            continue
        agree = "agrees to the microcent" if led.spent == run.spent else "DISAGREES"
        lines.append(
            f"{run.label}: {run.calls} calls, {usd(run.spent)} of {usd(budget, 2)}; "
            f"the server's ledger says spent {usd(led.spent)}, reserved {usd(led.reserved)}, "
            f"remaining {usd(led.remaining)} ({agree})."
        )
        res = run.reservations
        if res is not None and res.committed:
            lines.append(
                f"  {res.committed} reservations: {usd(res.estimated, 2)} reserved as estimates "
                f"before the calls, {usd(res.charged, 2)} committed as actual usage after them "
                "(the rest went back to the budget)."
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; exit status 1 if enforcement failed (see
    :func:`~runcycles_demo.report.enforcement_failures`)."""
    args = parse_args(argv)
    live = not args.no_live
    # Plain output is for logs: wide enough that the closing table never wraps.
    console = Console() if live else Console(width=200, highlight=False, no_color=True)
    budget: int = args.budget
    names = [f"support-bot-{i + 1}" for i in range(args.agents)]
    runs = [
        Run("1 unguarded", [Track("support-bot")]),
        Run("2 guarded", [Track("support-bot")], budget=budget, tenant="acme-guarded"),
        Run(f"3 parallel x{args.agents}", [Track(n) for n in names], budget, "acme-fleet"),
    ]
    board = LiveBoard(
        runs, f"runaway agent on gpt-4o (simulated, {args.latency_ms:g} ms/call), {usd(budget, 2)}"
    )
    clients: list[CyclesClient] = []
    began = time.monotonic()

    def say(text: str) -> None:
        board.phase = text
        if not live:
            console.print(text)

    logging.getLogger("langchain_core.callbacks.manager").addFilter(_ExpectedStops())
    previous = signal.signal(signal.SIGINT, _interrupted)
    try:
        _run_all(args, runs, board, clients, say, live, console)
    except KeyboardInterrupt:
        # The server and its store were stopped on the way out (their context managers).
        console.print(f"Interrupted after {time.monotonic() - began:.1f} s. Spent so far:")
        for run in runs:
            if run.calls:
                console.print(f"  {run.label}: {run.calls} calls, {usd(run.spent)}")
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
        logging.disable(logging.NOTSET)
    console.print(closing_table(runs, plain=not live, width=console.width))
    for line in _summary(runs, budget):
        console.print(line, soft_wrap=not live)  # in logs, long lines stay whole (greppable)
    chart = write_chart(args.chart, runs, budget)
    console.print(f"Chart of cumulative spend vs time: {chart}")
    failures = [f for run in runs for f in enforcement_failures(run)]
    for f in failures:
        console.print(f"ENFORCEMENT FAILED: {f}", style="bold red")
    verdict = "FAILED" if failures else "held"
    console.print(f"Enforcement {verdict}; demo took {time.monotonic() - began:.1f} s.")
    return 1 if failures else 0


def _run_all(
    args: argparse.Namespace,
    runs: Sequence[Run],
    board: LiveBoard,
    clients: list[CyclesClient],
    say: Callable[[str], None],
    live: bool,
    console: Console,
) -> None:
    """The three runs on one embedded server, recorded on ``runs``."""
    unguarded, guarded, fleet = runs
    budget: int = args.budget
    latency = args.latency_ms / 1000
    names = [t.name for t in fleet.tracks]
    _warm_up()
    with _data_dir(args.data_dir) as data_dir:
        say("starting runcycles-server-lite on its embedded store...")
        with demo_server(data_dir) as srv:
            tenants = {
                run.tenant: provision(srv, run.tenant, budget, data_dir / "journal")
                for run in (guarded, fleet)
                if run.tenant
            }
            say(f"server at {srv.base_url}; tenants acme-guarded and acme-fleet: {usd(budget, 2)}")
            view = Live(board, console=console, refresh_per_second=8) if live else None
            with view or contextlib.nullcontext():
                say(f"run 1/3: unguarded, stopped only by a {args.duration:g} s wall-clock cap")
                run_agent(unguarded.tracks[0], duration_s=args.duration, latency_s=latency)
                say(_done(unguarded))

                say(f"run 2/3: guarded by runcycles, {usd(budget, 2)} budget")
                g_tenant = tenants["acme-guarded"]
                handler = [] if args.break_enforcement else [_guards(g_tenant, clients)]
                with _watch(live, guarded, g_tenant):
                    run_agent(
                        guarded.tracks[0],
                        duration_s=args.duration,
                        guards=handler,
                        latency_s=latency,
                    )
                guarded.ledger = read_ledger(g_tenant.config, g_tenant.id)
                guarded.reservations = read_reservations(g_tenant.config, g_tenant.id)
                say(_done(guarded))

                say(f"run 3/3: {args.agents} agents in parallel sharing {usd(budget, 2)}")
                f_tenant = tenants["acme-fleet"]
                shared = [] if args.break_enforcement else [_guards(f_tenant, clients)]
                with _watch(live, fleet, f_tenant):
                    run_fleet(
                        fleet.tracks,
                        duration_s=args.duration,
                        guards_for=lambda i: shared,
                        metadata_for=lambda i: {"cycles_agent": names[i]},
                        latency_s=latency,
                    )
                fleet.ledger = read_ledger(f_tenant.config, f_tenant.id)
                fleet.reservations = read_reservations(f_tenant.config, f_tenant.id)
                say(_done(fleet))
            for c in clients:
                c.close()


def _watch(live: bool, run: Run, tenant: Tenant) -> contextlib.AbstractContextManager[None]:
    # Only the live display shows the ledger while a run is going; the final reading after the
    # run is what the closing table and the checks use, live or not.
    return watch_ledger(run, tenant.config, tenant.id) if live else contextlib.nullcontext()


def _done(run: Run) -> str:
    return (
        f"{run.label}: {run.calls} calls, {usd(run.spent, 4)} in {run.elapsed():.1f} s; "
        f"stopped by {run.stopped_by}"
    )
