"""A per-test tenant on a real server-lite, and what the contract suite reads from its ledger."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runcycles_core import CyclesClient, CyclesConfig
from runcycles_core.models import ReservationStatus, ReservationSummary
from runcycles_core.plugin import CyclesSettings
from runcycles_server_lite.testing import ServerHandle

__all__ = ["Bench", "DEAD_URL"]

#: A loopback URL nothing listens on (port 9 is "discard"): every request fails to connect.
DEAD_URL = "http://127.0.0.1:9"


class Bench:
    """A fresh tenant on ``server`` with helpers to fund it and read its ledger.

    Call :meth:`fund` first (it creates the tenant, its budgets and an API key), then
    :meth:`settings` for the :class:`CyclesSettings` a plugin is built with.
    """

    def __init__(self, server: ServerHandle, tmp_path: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.tenant = "ct" + secrets.token_hex(6)
        self.api_key: str | None = None
        self._clients: list[CyclesClient] = []

    def fund(self, budgets: Mapping[str, int] | None = None, **provision: Any) -> str:
        """Create the tenant with ``{scope: allocated}`` budgets (default: one generous
        tenant budget); scopes omit the ``tenant:<id>/`` prefix. Returns the API key."""
        self.api_key = self.server.provision(
            self.tenant, budgets if budgets is not None else {"": 10**12}, **provision
        )
        return self.api_key

    def config(self, **overrides: Any) -> CyclesConfig:
        """A client config for this tenant (journal under the test's tmp dir, quick retries)."""
        if self.api_key is None:
            self.fund()
        values: dict[str, Any] = {
            "base_url": self.server.base_url,
            "api_key": self.api_key,
            "tenant": self.tenant,
            "journal_dir": str(self.tmp_path / "journal"),
            "retry_initial_delay": 0.01,
            "retry_max_delay": 0.05,
            "retry_max_attempts": 1,
        }
        values.update(overrides)
        return CyclesConfig(**values)

    def client(self, **overrides: Any) -> CyclesClient:
        client = CyclesClient(self.config(**overrides))
        self._clients.append(client)
        return client

    def settings(
        self, *, client_overrides: Mapping[str, Any] | None = None, **kw: Any
    ) -> CyclesSettings:
        """:class:`CyclesSettings` on this tenant; ``kw`` sets settings fields, and
        ``client_overrides`` config fields (e.g. ``base_url=DEAD_URL`` for an outage)."""
        return CyclesSettings(client=self.client(**(client_overrides or {})), **kw)

    # -- the ledger ----------------------------------------------------------------------------
    @property
    def reader(self) -> CyclesClient:
        """A client that reads this tenant's ledger (always the live server)."""
        if not self._clients or self._clients[0].config.base_url != self.server.base_url:
            self._clients.insert(0, CyclesClient(self.config()))
        return self._clients[0]

    def balance(self, scope: str = "") -> tuple[int, int]:
        """``(spent, reserved)`` of the budget at ``scope`` (relative to the tenant)."""
        full = f"tenant:{self.tenant}" + (f"/{scope}" if scope else "")
        for b in self.reader.iter_balances(tenant=self.tenant, include_children=True):
            if b.scope == full:
                spent = b.spent.amount if b.spent else 0
                reserved = b.reserved.amount if b.reserved else 0
                return spent, reserved
        raise AssertionError(f"no budget at {full}")

    def spent(self, scope: str = "") -> int:
        return self.balance(scope)[0]

    def reserved(self, scope: str = "") -> int:
        return self.balance(scope)[1]

    def reservations(
        self, status: ReservationStatus | None = None, *, kind: str | None = None
    ) -> list[ReservationSummary]:
        """This tenant's reservations, oldest first, optionally by status and action kind."""
        rows = list(
            self.reader.iter_reservations(
                tenant=self.tenant, status=status, sort_by="created_at_ms", sort_dir="asc"
            )
        )
        if kind is not None:
            rows = [r for r in rows if r.action.kind == kind]
        return rows

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()
