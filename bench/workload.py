"""The protocol workload shared by every part: tenants with a two-level budget hierarchy, the
request bodies, and the ledger checks that every run must pass."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.store import Store

UNIT = "USD_MICROCENTS"
ALLOCATED = 10**14  # 15 digits: see README (16+ digits take the Lua slow path)
ESTIMATE = 1_000
ACTUAL = 600
TTL_MS = 3_600_000  # long enough that nothing expires during a run
AGENTS = 16


def reserve_body(tenant: str, i: int) -> dict[str, Any]:
    """A reservation against ``tenant`` → ``workspace:bench`` (both budgeted) for one of
    ``AGENTS`` agents (unbudgeted leaf, as most agents are)."""
    return {
        "idempotency_key": uuid.uuid4().hex,
        "subject": {"tenant": tenant, "workspace": "bench", "agent": f"agent-{i % AGENTS}"},
        "action": {"kind": "llm.completion", "name": "openai:gpt-4o"},
        "estimate": {"unit": UNIT, "amount": ESTIMATE},
        "ttl_ms": TTL_MS,
    }


def commit_body() -> bytes:
    return orjson.dumps(
        {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": UNIT, "amount": ACTUAL}}
    )


async def provision(store: Store, tenant: str) -> str:
    """Create ``tenant`` with budgets at ``tenant`` and ``tenant/workspace:bench``; returns a
    fresh API key secret."""
    await prov.create_tenant(store, tenant, tenant)
    for scope in (f"tenant:{tenant}", f"tenant:{tenant}/workspace:bench"):
        await prov.create_budget(store, tenant, scope, UNIT, ALLOCATED)
    return (await prov.create_api_key(store, tenant, "bench")).secret


def provision_sync(redis_url: str, tenant: str) -> str:
    async def go() -> str:
        store = Store.from_url(redis_url)
        try:
            return await provision(store, tenant)
        finally:
            await store.close()

    return asyncio.run(go())


@dataclass
class LedgerCheck:
    """Mismatches found in one tenant's budgets (0 and 0 is the only passing result)."""

    budgets: int
    identity_mismatches: int
    reconcile_mismatches: int
    detail: str = ""

    @property
    def mismatches(self) -> int:
        return self.identity_mismatches + self.reconcile_mismatches


async def check_ledger(
    store: Store, tenant: str, reserved_ok: int | None = None, committed_ok: int | None = None
) -> LedgerCheck:
    """Read every budget of ``tenant``: ``remaining == allocated - spent - reserved - debt``
    always; with client-side success counts, also ``reserved`` and ``spent`` exactly."""
    rows = await prov.list_budgets(store, tenant)
    identity = reconcile = 0
    detail = []
    for b in rows:
        a, r, s, res, d = (
            int(b[f]) for f in ("allocated", "remaining", "spent", "reserved", "debt")
        )
        if r != a - s - res - d:
            identity += 1
            detail.append(f"{b['scope']}: remaining {r} != {a}-{s}-{res}-{d}")
        if reserved_ok is not None and committed_ok is not None:
            want_res = (reserved_ok - committed_ok) * ESTIMATE
            want_spent = committed_ok * ACTUAL
            if res != want_res or s != want_spent or d != 0:
                reconcile += 1
                detail.append(
                    f"{b['scope']}: reserved {res} (want {want_res}), spent {s} (want {want_spent})"
                )
    return LedgerCheck(len(rows), identity, reconcile, "; ".join(detail))


async def check_all_ledgers(store: Store) -> LedgerCheck:
    """The identity over every budget of every tenant in the store."""
    total = LedgerCheck(0, 0, 0)
    for t in await prov.list_tenants(store):
        c = await check_ledger(store, t["tenant_id"])
        total.budgets += c.budgets
        total.identity_mismatches += c.identity_mismatches
        if c.detail:
            total.detail += c.detail + "; "
    return total
