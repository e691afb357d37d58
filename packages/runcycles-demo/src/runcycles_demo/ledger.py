"""The server side of the demo: server-lite on its embedded store, tenants, and their ledgers.

Everything the demo says about enforcement is read back from the server's own balances, not
from the client's arithmetic: :func:`read_ledger` returns what ``GET /v1/balances`` reports.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runcycles_core import CyclesClient, CyclesConfig
from runcycles_core.models import ReservationStatus
from runcycles_server_lite.embedded import EmbeddedRedis
from runcycles_server_lite.testing import ServerHandle, running_server

__all__ = [
    "Ledger",
    "Reservations",
    "Tenant",
    "demo_server",
    "ledger_of",
    "provision",
    "read_ledger",
    "read_reservations",
    "watch_ledger",
]


class HasLiveLedger(Protocol):
    live_ledger: Ledger | None


@dataclass(frozen=True)
class Tenant:
    """A provisioned tenant: its id, an API key, and the client config to reach it."""

    id: str
    config: CyclesConfig


@dataclass(frozen=True)
class Ledger:
    """One budget as the server reports it (µ¢)."""

    scope: str
    allocated: int
    spent: int
    reserved: int
    debt: int
    remaining: int

    @property
    def consistent(self) -> bool:
        """The ledger identity ``remaining = allocated - spent - reserved - debt`` holds."""
        return self.remaining == self.allocated - self.spent - self.reserved - self.debt


@dataclass(frozen=True)
class Reservations:
    """A tenant's reservations as the server lists them (``GET /v1/reservations``)."""

    statuses: Counter[str] = field(default_factory=Counter)
    #: µ¢ held by the committed reservations before their calls ran (the estimates)
    estimated: int = 0
    #: µ¢ the committed reservations charged (the actual usage)
    charged: int = 0
    #: committed reservations per subject agent
    per_agent: Counter[str] = field(default_factory=Counter)

    @property
    def committed(self) -> int:
        return self.statuses[ReservationStatus.COMMITTED.value]


@contextlib.contextmanager
def demo_server(data_dir: Path) -> Iterator[ServerHandle]:
    """server-lite on a loopback port, on an embedded Redis persisting to ``data_dir``.

    Always the embedded store, even if ``REDIS_URL`` is set: the demo must not write into
    someone's Redis, and its ledger stays readable in ``data_dir`` after it exits.
    """
    with (
        EmbeddedRedis(data_dir / "store") as redis,
        running_server(data_dir, redis_url=redis.url) as srv,
    ):
        yield srv


def provision(srv: ServerHandle, tenant: str, budget: int, journal_dir: Path) -> Tenant:
    """Create ``tenant`` with ``budget`` µ¢ at the tenant scope and an API key for it."""
    key = srv.provision(tenant, {"": budget})
    config = CyclesConfig(
        base_url=srv.base_url,
        api_key=key,
        tenant=tenant,
        journal_dir=str(journal_dir),
    )
    return Tenant(tenant, config)


def read_ledger(config: CyclesConfig, tenant: str) -> Ledger:
    """The tenant-scope budget of ``tenant`` from ``GET /v1/balances``."""
    with CyclesClient(config) as client:
        return ledger_of(client, tenant)


def ledger_of(client: CyclesClient, tenant: str) -> Ledger:
    """:func:`read_ledger` on an open client."""
    scope = f"tenant:{tenant}"
    for b in client.iter_balances(tenant=tenant):
        if b.scope == scope:
            return Ledger(
                scope=scope,
                allocated=b.allocated.amount if b.allocated else 0,
                spent=b.spent.amount if b.spent else 0,
                reserved=b.reserved.amount if b.reserved else 0,
                debt=b.debt.amount if b.debt else 0,
                remaining=b.remaining.amount,
            )
    raise LookupError(f"the server reports no budget at {scope}")


@contextlib.contextmanager
def watch_ledger(run: HasLiveLedger, config: CyclesConfig, tenant: str) -> Iterator[None]:
    """Keep ``run.live_ledger`` fresh from the server (every 0.25 s) while the block runs, so
    the live display shows the server's own spend ticking, not only the client's tally. (Only
    for display: the checks use a reading taken after the run, never this one.)"""
    stop = threading.Event()

    def poll() -> None:
        with CyclesClient(config) as client:
            while not stop.is_set():
                with contextlib.suppress(Exception):  # a missed tick is only a stale display
                    run.live_ledger = ledger_of(client, tenant)
                stop.wait(0.25)

    thread = threading.Thread(target=poll, name="demo-ledger-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def read_reservations(config: CyclesConfig, tenant: str) -> Reservations:
    """Every reservation of ``tenant``, summed by status, estimate and charge."""
    statuses: Counter[str] = Counter()
    per_agent: Counter[str] = Counter()
    estimated = charged = 0
    with CyclesClient(config) as client:
        for r in client.iter_reservations(tenant=tenant):
            statuses[r.status.value] += 1
            if r.status is ReservationStatus.COMMITTED:
                estimated += r.reserved.amount
                charged += r.committed.amount if r.committed else 0
                per_agent[r.subject.agent or ""] += 1
    return Reservations(statuses, estimated, charged, per_agent)
