"""Expiry: the sweeper returns holds past expires_at + grace, once, and never crashes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from runtime_support import Tenant, TenantFactory, key, make_tenant, mk, short

from runcycles_server_lite.store import Store
from runcycles_server_lite.sweeper import Sweeper, SweepStats
from runcycles_server_lite.testing import ServerHandle, running_server

__all__ = ["mk"]


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server whose sweeper runs every 50 ms."""
    with running_server(tmp_path_factory.mktemp("fast"), sweep_interval_s=0.05) as srv:
        yield srv


@pytest.fixture
def fast_tenant(fast: ServerHandle) -> Iterator[Callable[[dict[str, int]], Tenant]]:
    with contextlib.ExitStack() as stack:

        def make(budgets: dict[str, int], **kw: object) -> Tenant:
            return stack.enter_context(make_tenant(fast, budgets, **kw))

        yield make


def _wait_status(t: Tenant, rid: str, status: str, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if t.raw_reservation(rid).get("status") == status:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{rid} never became {status}: {t.raw_reservation(rid)}")


def test_expiry_returns_the_hold(fast_tenant: Callable[..., Tenant]) -> None:
    t = fast_tenant({"": 1000, "workspace:w": 500})
    k = key()
    rid = t.reserve_ok(
        100, subject=t.subject(workspace="w"), ttl_ms=1000, grace_period_ms=0, idempotency_key=k
    )
    assert short(t.ledger(), t.name) == {"": (900, 100, 0, 0), "workspace:w": (400, 100, 0, 0)}
    _wait_status(t, rid, "EXPIRED")
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0), "workspace:w": (500, 0, 0, 0)}
    got = t.http.get(f"/v1/reservations/{rid}")
    assert got.status_code == 410
    assert got.json()["error"] == "RESERVATION_EXPIRED"
    rows = t.http.get("/v1/reservations", params={"status": "EXPIRED"}).json()["reservations"]
    assert [r["reservation_id"] for r in rows] == [rid]
    for r in (t.commit(rid, 1), t.release(rid), t.extend(rid, 1000)):
        assert r.status_code == 410
    replay = t.reserve(
        100, subject=t.subject(workspace="w"), ttl_ms=1000, grace_period_ms=0, idempotency_key=k
    )
    assert replay.json()["reservation_id"] == rid
    assert replay.json()["remaining_ttl_ms"] == 0
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0), "workspace:w": (500, 0, 0, 0)}
    assert int(t.server.run_store(lambda s: s.redis.pttl(s.keys.finalized(t.name, rid)))) > 0


def test_grace_and_extension_postpone_expiry(fast_tenant: Callable[..., Tenant]) -> None:
    t = fast_tenant({"": 1000})
    graced = t.reserve_ok(10, ttl_ms=1000, grace_period_ms=1500)
    extended = t.reserve_ok(10, ttl_ms=1000, grace_period_ms=0)
    assert t.extend(extended, 1500).status_code == 200
    time.sleep(1.3)
    assert t.raw_reservation(graced)["status"] == "ACTIVE"
    assert t.raw_reservation(extended)["status"] == "ACTIVE"
    assert t.commit(graced, 5).status_code == 200  # inside grace
    _wait_status(t, extended, "EXPIRED")
    assert short(t.ledger(), t.name) == {"": (995, 0, 5, 0)}


def _sweep(server: ServerHandle) -> SweepStats:
    """One sweep of the session server from the test (retrying while its own sweeper holds
    the lease)."""
    for _ in range(100):
        stats = server.run_store(lambda s: Sweeper(s, server.settings).sweep())
        if stats.ran:
            return stats
        time.sleep(0.02)
    raise AssertionError("could not take the sweeper lease")


def _make_due(t: Tenant, rid: str, **fields: str) -> None:
    async def go(store: Store) -> None:
        await store.redis.hset(
            store.keys.reservation(t.name, rid),
            mapping={"expires_at": "1", "grace_ms": "0", **fields},
        )
        await store.redis.zadd(store.keys.reservation_expiry(t.name), {rid: 1})

    t.server.run_store(go)


@pytest.fixture(scope="module")
def still(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server whose own sweeper never runs during a test: the test's sweep is the only one,
    so its counts are exact (on the shared server the background pass can get there first)."""
    with running_server(tmp_path_factory.mktemp("still"), sweep_interval_s=3600) as srv:
        yield srv


def test_sweeper_is_idempotent_and_quarantines_poison_rows(still: ServerHandle) -> None:
    server = still
    with make_tenant(still, {"": 1000}) as t:
        _check_sweeps(server, t)


def _check_sweeps(server: ServerHandle, t: Tenant) -> None:
    good, poison, bad_scopes, done = (t.reserve_ok(100) for _ in range(4))
    t.commit(done, 10)
    _make_due(t, good)
    _make_due(t, poison, estimate="lots")
    _make_due(t, bad_scopes, budget_keys="a\nb", budget_scopes="only-one")
    # A finalized row left behind in the expiry index (its record is the finalized string).
    t.server.run_store(lambda s: s.redis.zadd(s.keys.reservation_expiry(t.name), {done: 1}))
    stats = _sweep(server)
    assert stats.expired == 1
    assert stats.quarantined == 2
    assert t.raw_reservation(good)["status"] == "EXPIRED"
    assert t.raw_reservation(poison)["quarantine_reason"] == "INVALID_ESTIMATE"
    assert t.raw_reservation(poison)["status"] == "ACTIVE"
    assert t.raw_reservation(bad_scopes)["quarantine_reason"] == "MALFORMED_SCOPES"
    assert t.raw_reservation(done)["status"] == "COMMITTED"
    # good's hold came back; the quarantined holds stay (ledger untouched), done is settled.
    assert short(t.ledger(), t.name) == {"": (790, 200, 10, 0)}
    # A second pass finds nothing left to do for this tenant and refunds nothing twice.
    _make_due(t, good)
    _sweep(server)
    assert short(t.ledger(), t.name) == {"": (790, 200, 10, 0)}

    async def due(store: Store) -> list[str]:
        return list(await store.redis.zrange(store.keys.reservation_expiry(t.name), 0, -1))

    assert server.run_store(due) == []


def test_expiry_of_a_closed_tenant_does_not_refund(server: ServerHandle, mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100)
    t.set_tenant(status="CLOSED")
    _make_due(t, rid)
    _sweep(server)
    assert t.raw_reservation(rid)["status"] == "EXPIRED"
    assert short(t.ledger(), t.name) == {"": (900, 100, 0, 0)}


def test_ledger_short_of_the_hold_is_quarantined_not_driven_negative(
    server: ServerHandle, mk: TenantFactory
) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100)
    # As if an operator had already returned the hold out of band.
    t.set_budget("", reserved="0", remaining="1000")
    _make_due(t, rid)
    _sweep(server)
    assert t.raw_reservation(rid)["quarantine_reason"] == "LEDGER_SHORT"
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}


def test_lease_excludes_a_second_sweeper(server: ServerHandle) -> None:
    async def go(store: Store) -> tuple[bool, bool]:
        lease = store.keys.lease("sweeper")
        for _ in range(100):
            if await store.redis.set(lease, "someone-else", nx=True, px=5000):
                break
            await asyncio.sleep(0.02)
        try:
            blocked = await Sweeper(store, server.settings).sweep()
            survived = await store.redis.get(lease) == "someone-else"
        finally:
            await store.redis.delete(lease)
        return blocked.ran, survived

    ran, survived = server.run_store(go)
    assert ran is False
    assert survived is True


def test_a_backlog_larger_than_one_batch_is_drained_in_one_sweep(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A server whose own sweeper is off, so the sweep below is the only one.
    with (
        running_server(tmp_path_factory.mktemp("quiet"), sweep_interval_s=0, sweep_batch=2) as srv,
        make_tenant(srv, {"": 1000}) as t,
    ):
        rids = [t.reserve_ok(10) for _ in range(5)]
        for rid in rids:
            _make_due(t, rid)
        stats = srv.run_store(lambda s: Sweeper(s, srv.settings).sweep())
        assert stats.expired == 5
        assert [t.raw_reservation(rid)["status"] for rid in rids] == ["EXPIRED"] * 5
        assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}
