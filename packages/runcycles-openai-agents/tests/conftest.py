"""Fixtures: a real server-lite (embedded Redis or REDIS_URL) and a fresh tenant per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# The SDK exports traces to OpenAI by default; tests never touch the network.
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import runcycles_core as rc
from runcycles_core.plugin import CyclesSettings

MODEL = "gpt-4o-mini"


pytest_plugins = ("runcycles_testing.fixtures",)


@pytest.fixture
def server(cycles_server: Any) -> Any:
    """The session's server-lite (shared with the contract suite)."""
    return cycles_server


@dataclass
class Tenant:
    """A provisioned tenant and what the tests read back from the server."""

    id: str
    config: rc.CyclesConfig
    clients: list[rc.AsyncCyclesClient] = field(default_factory=list)

    def client(self) -> rc.AsyncCyclesClient:
        """An async client for this tenant, closed when the test ends."""
        client = rc.AsyncCyclesClient(self.config)
        self.clients.append(client)
        return client

    def settings(self, **kwargs: Any) -> CyclesSettings:
        return CyclesSettings(client=self.client(), **kwargs)

    def balance(self, scope: str = "") -> rc.models.Balance:
        with rc.CyclesClient(self.config) as client:
            for b in client.get_balances(tenant=self.id).balances:
                if b.scope == f"tenant:{self.id}{scope}":
                    return b
        raise AssertionError(f"no budget at {scope!r}")

    def spent(self, scope: str = "") -> int:
        b = self.balance(scope)
        return b.spent.amount if b.spent else 0

    def reserved(self, scope: str = "") -> int:
        b = self.balance(scope)
        return b.reserved.amount if b.reserved else 0


@pytest.fixture
async def make_tenant(server: Any, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Tenant] = []

    def make(budgets: dict[str, int] | None = None) -> Tenant:
        tenant = "oa" + secrets.token_hex(5)
        key = server.provision(tenant, budgets if budgets is not None else {"": 10**9})
        config = rc.CyclesConfig(
            base_url=server.base_url,
            api_key=key,
            tenant=tenant,
            journal_dir=str(tmp_path / "journal"),
        )
        made.append(Tenant(tenant, config))
        return made[-1]

    yield make
    for t in made:
        for client in t.clients:
            await client.aclose()


@pytest.fixture
def tenant(make_tenant: Any) -> Tenant:
    return make_tenant(None)  # type: ignore[no-any-return]
