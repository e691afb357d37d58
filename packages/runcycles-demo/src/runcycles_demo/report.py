"""What a run is made of and how the demo judges it: client tallies against the server's ledger."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from runcycles_core.pricing import MICROCENTS_PER_USD

from .ledger import Ledger, Reservations
from .runs import Track

__all__ = ["Run", "enforcement_failures", "usd"]

HOURS_PER_MONTH = 24 * 30


def usd(microcents: int, places: int = 8) -> str:
    """``$1.23456789``: µ¢ as dollars, exact at the default 8 places."""
    value = Decimal(microcents) / MICROCENTS_PER_USD
    return f"${value:,.{places}f}"


@dataclass
class Run:
    """One of the demo's three runs: one or more agents, and the budget they share (if any)."""

    label: str
    tracks: list[Track]
    budget: int | None = None  # µ¢; None = unguarded
    tenant: str | None = None
    ledger: Ledger | None = None  # read after the run: what the checks use
    reservations: Reservations | None = None
    live_ledger: Ledger | None = None  # polled during the run, for the live display only

    @property
    def calls(self) -> int:
        return sum(t.calls for t in self.tracks)

    @property
    def spent(self) -> int:
        return sum(t.spent for t in self.tracks)

    @property
    def started(self) -> float | None:
        starts = [t.started for t in self.tracks if t.started is not None]
        return min(starts) if starts else None

    def elapsed(self) -> float:
        start = self.started
        if start is None:
            return 0.0
        ends = [t.ended for t in self.tracks]
        end = max(e for e in ends if e is not None) if all(ends) else time.monotonic()
        return end - start

    @property
    def state(self) -> str:
        states = {t.state for t in self.tracks}
        if "running" in states:
            return "running"
        if states == {"waiting"}:
            return "waiting"
        return "error" if "error" in states else "+".join(sorted(states))

    @property
    def stopped_by(self) -> str:
        """The agents' common reason, or how many stopped each way (``3 denied, 2 capped``)."""
        reasons = {t.stopped_by for t in self.tracks if t.stopped_by}
        if len(reasons) <= 1:
            return reasons.pop() if reasons else ""
        counts = Counter(t.state for t in self.tracks)
        return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))

    def per_hour(self) -> int:
        """µ¢ per hour at this run's average rate (0 before it has spent anything)."""
        seconds = self.elapsed()
        if seconds <= 0 or not self.spent:
            return 0
        return int(Decimal(self.spent) * 3600 / Decimal(seconds))

    def crossed(self, amount: int) -> tuple[float, int] | None:
        """(seconds, calls) when the run's spend first exceeded ``amount``, if it did."""
        for calls, (at, total) in enumerate(self.cumulative()):
            if total > amount:
                return at, calls
        return None

    def cumulative(self) -> list[tuple[float, int]]:
        """(seconds since the run started, µ¢ spent by all its agents) after each call."""
        start = self.started
        if start is None:
            return []
        steps: list[tuple[float, int]] = []
        for t in self.tracks:
            prev = 0
            for at, total in t.points:
                steps.append((at, total - prev))
                prev = total
        out: list[tuple[float, int]] = [(0.0, 0)]
        running = 0
        for at, delta in sorted(steps):
            running += delta
            out.append((at - start, running))
        return out


def enforcement_failures(run: Run) -> list[str]:
    """Why ``run`` (a guarded one) shows that enforcement failed; empty if it held.

    - the agents spent more than the budget (by the client's pricing or the server's ledger);
    - the ledger's spend differs from what the agents were charged, call by call, by core's
      pricing (the plugin commits exactly that);
    - the ledger identity ``remaining = allocated - spent - reserved - debt`` is broken, or a
      hold is still open after every agent stopped;
    - the committed reservations do not add up to the ledger's spend, or an agent's calls do
      not match the reservations committed for it (one per call);
    - an agent stopped on an error rather than a denial or the cap.
    """
    if run.budget is None:
        return []
    out: list[str] = []
    name = run.label
    if run.spent > run.budget:
        out.append(f"{name}: agents spent {usd(run.spent)} > budget {usd(run.budget)}")
    for t in run.tracks:
        if t.state == "error":
            out.append(f"{name}: {t.name} stopped on an error: {t.stopped_by}")
    led = run.ledger
    if led is None:
        out.append(f"{name}: no ledger read from the server")
        return out
    if led.allocated != run.budget:
        out.append(f"{name}: ledger allocated {usd(led.allocated)} != budget {usd(run.budget)}")
    if led.spent > run.budget:
        out.append(f"{name}: ledger spent {usd(led.spent)} > budget {usd(run.budget)}")
    if led.spent != run.spent:
        out.append(
            f"{name}: ledger mismatch: server spent {usd(led.spent)} != charged {usd(run.spent)}"
        )
    if not led.consistent:
        out.append(
            f"{name}: ledger mismatch: remaining {usd(led.remaining)} != allocated - spent "
            f"- reserved - debt"
        )
    if led.reserved:
        out.append(f"{name}: {usd(led.reserved)} still reserved after every agent stopped")
    res = run.reservations
    if res is None:
        out.append(f"{name}: no reservations read from the server")
        return out
    if res.charged != led.spent:
        out.append(
            f"{name}: ledger mismatch: reservations charged {usd(res.charged)} != spent "
            f"{usd(led.spent)}"
        )
    for t in run.tracks:
        if res.per_agent[t.name] != t.calls:
            out.append(
                f"{name}: {t.name} made {t.calls} calls but the server committed "
                f"{res.per_agent[t.name]} reservations for it"
            )
    return out
