"""What the dashboard shows, read from the store with the admin plane's own readers.

Budgets come from :func:`provisioning.list_budgets`, tenants from
:func:`provisioning.list_tenants`, exactly as the admin API lists them. Active reservations
come from the tenant's expiry index (it holds exactly the ACTIVE ones); spend over time from
the committed reservations in the tenant's reservation index, each charged amount counted once
at the time it was committed. Amounts stay wire integers here; the templates format them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite import runtime
from runcycles_server_lite.store import Store

# Spend windows offered: name -> (window length, bucket count).
WINDOWS: dict[str, tuple[int, int]] = {
    "1h": (3600_000, 12),
    "24h": (86_400_000, 24),
    "7d": (7 * 86_400_000, 28),
}
DEFAULT_WINDOW = "1h"
# A reservation is committed at most this long after it is created (the TTL cap times the
# extension cap, with room): the created_at index is read from window start minus this.
_COMMIT_LAG_MS = 86_400_000
# Bounds on one page view, so a tenant with a huge history cannot make a refresh slow.
ACTIVE_SHOWN = 100
SPEND_SCAN_LIMIT = 20_000
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """One ledger of the scope tree (amounts in ``unit``)."""

    scope: str
    unit: str
    depth: int
    label: str
    allocated: int
    reserved: int
    spent: int
    remaining: int
    debt: int
    overdraft_limit: int
    status: str
    over_limit: bool

    @property
    def utilization(self) -> float:
        """(spent + reserved) / allocated, the figure the threshold events use."""
        if self.allocated <= 0:
            return 1.0 if self.spent + self.reserved > 0 else 0.0
        return (self.spent + self.reserved) / self.allocated

    @property
    def flags(self) -> list[str]:
        out = []
        if self.over_limit:
            out.append("over-limit")
        if self.debt > 0:
            out.append("in-debt")
        if self.status != "ACTIVE":
            out.append(self.status.lower())
        return out


@dataclass(frozen=True, slots=True)
class ActiveReservation:
    reservation_id: str
    scope: str
    unit: str
    estimate: int
    created_ms: int
    expires_ms: int
    ttl_ms: int


@dataclass(slots=True)
class SpendSeries:
    """Committed spend of one unit in equal buckets over the window (oldest first)."""

    unit: str
    start_ms: int
    bucket_ms: int
    buckets: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.buckets)

    @property
    def peak(self) -> int:
        return max(self.buckets, default=0)


@dataclass(slots=True)
class TenantView:
    tenant: dict[str, str]
    now_ms: int
    budgets: list[BudgetRow]
    reservations: list[ActiveReservation] | None
    spend: list[SpendSeries]
    window: str
    commits_seen: int = 0
    scan_truncated: bool = False


@dataclass(frozen=True, slots=True)
class TenantSummary:
    tenant_id: str
    name: str
    status: str
    budgets: int
    over_limit: int
    in_debt: int
    frozen: int
    money_remaining: int
    money_allocated: int


def _int(record: dict[str, str], name: str) -> int:
    return int(record.get(name) or 0)


def budget_rows(records: list[dict[str, str]]) -> list[BudgetRow]:
    """Ledgers as a scope tree: parents before children, indented by depth."""
    rows = []
    for r in sorted(records, key=lambda r: (r.get("scope", ""), r.get("unit", ""))):
        scope = r.get("scope", "")
        rows.append(
            BudgetRow(
                scope=scope,
                unit=r.get("unit", ""),
                depth=scope.count("/"),
                label=scope.rsplit("/", 1)[-1],
                allocated=_int(r, "allocated"),
                reserved=_int(r, "reserved"),
                spent=_int(r, "spent"),
                remaining=_int(r, "remaining"),
                debt=_int(r, "debt"),
                overdraft_limit=_int(r, "overdraft_limit"),
                status=r.get("status", "ACTIVE"),
                over_limit=r.get("is_over_limit") == "true",
            )
        )
    return rows


async def tenant_summaries(store: Store, only: str | None = None) -> list[TenantSummary]:
    """One line per tenant (or just ``only``), oldest first."""
    if only is not None:
        record = await prov.get_tenant(store, only)
        tenants = [record] if record else []
    else:
        tenants = await prov.list_tenants(store)
    out = []
    for t in tenants:
        rows = budget_rows(await prov.list_budgets(store, t["tenant_id"]))
        money = [b for b in rows if b.unit == "USD_MICROCENTS"]
        out.append(
            TenantSummary(
                tenant_id=t["tenant_id"],
                name=t.get("name", ""),
                status=t.get("status", "ACTIVE"),
                budgets=len(rows),
                over_limit=sum(b.over_limit for b in rows),
                in_debt=sum(b.debt > 0 for b in rows),
                frozen=sum(b.status == "FROZEN" for b in rows),
                # The tenant-level (root) ledger holds the tenant's own totals.
                money_remaining=sum(b.remaining for b in money if b.depth == 0),
                money_allocated=sum(b.allocated for b in money if b.depth == 0),
            )
        )
    return out


async def active_reservations(store: Store, tenant: str, now: int) -> list[ActiveReservation]:
    """The tenant's ACTIVE reservations, soonest expiry first."""
    ids: list[str] = await store.redis.zrange(
        store.keys.reservation_expiry(tenant), 0, ACTIVE_SHOWN - 1
    )
    if not ids:
        return []
    fields = ["status", "scope_path", "unit", "estimate", "created_at", "expires_at"]
    async with store.redis.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hmget(store.keys.reservation(tenant, rid), fields)
        replies: list[list[Any]] = await pipe.execute()
    out = []
    for rid, (status, scope, unit, estimate, created, expires) in zip(ids, replies, strict=True):
        if status != "ACTIVE":
            continue  # finalized between the two reads
        expires_ms = int(expires or 0)
        out.append(
            ActiveReservation(
                reservation_id=rid,
                scope=str(scope or ""),
                unit=str(unit or ""),
                estimate=int(estimate or 0),
                created_ms=int(created or 0),
                expires_ms=expires_ms,
                ttl_ms=max(expires_ms - now, 0),
            )
        )
    return out


async def spend_series(
    store: Store, tenant: str, now: int, window: str
) -> tuple[list[SpendSeries], int, bool]:
    """(one series per unit with commits, commits counted, whether the scan hit its cap)."""
    length, count = WINDOWS[window]
    bucket = length // count
    start = now - bucket * count
    index = store.keys.reservation_index(tenant)
    series: dict[str, SpendSeries] = {}
    seen = commits = 0
    truncated = False
    while True:
        # Newest first below a fixed upper bound, so reservations made during the scan do not
        # shift the offsets.
        ids: list[str] = await store.redis.zrevrangebyscore(
            index, now, start - _COMMIT_LAG_MS, start=seen, num=_CHUNK
        )
        if not ids:
            break
        # Finalized reservations are compact records (runtime.read_reservations decodes both
        # layouts); an id whose record has expired is skipped.
        for rec in await runtime.read_reservations(store, tenant, ids):
            status, unit = rec.get("status"), rec.get("unit")
            charged, finalized = rec.get("charged"), rec.get("finalized_at")
            if status != "COMMITTED" or not finalized:
                continue
            at = int(finalized)
            if not start <= at < start + bucket * count:
                continue
            s = series.get(str(unit))
            if s is None:
                s = series[str(unit)] = SpendSeries(str(unit), start, bucket, [0] * count)
            s.buckets[(at - start) // bucket] += int(charged or 0)
            commits += 1
        seen += len(ids)
        if len(ids) < _CHUNK:
            break
        if seen >= SPEND_SCAN_LIMIT:
            truncated = True
            break
    order = sorted(series.values(), key=lambda s: (s.unit != "USD_MICROCENTS", s.unit))
    return order, commits, truncated


async def tenant_view(
    store: Store, tenant: str, *, window: str, reservations: bool
) -> TenantView | None:
    """Everything the tenant page shows, or None if there is no such tenant."""
    record = await prov.get_tenant(store, tenant)
    if record is None:
        return None
    now = await store.time_ms()
    budgets = budget_rows(await prov.list_budgets(store, tenant))
    active = await active_reservations(store, tenant, now) if reservations else None
    spend, commits, truncated = await spend_series(store, tenant, now, window)
    return TenantView(
        tenant=record,
        now_ms=now,
        budgets=budgets,
        reservations=active,
        spend=spend,
        window=window,
        commits_seen=commits,
        scan_truncated=truncated,
    )
