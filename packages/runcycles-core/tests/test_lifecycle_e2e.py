"""The lifecycle (guards, decorator, settlement) end to end against a real server-lite."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import runcycles_core as rc
from runcycles_core.decorator import aguard, cycles, guard, reserve
from runcycles_core.lifecycle import AsyncGuard, GuardState, get_cycles_context, stats
from runcycles_core.settlement import settler_for

Provision = Callable[..., rc.CyclesConfig]


@pytest.fixture
def provision(server: Any, tmp_path: Path) -> Provision:
    """A fresh tenant with ``{scope: allocated}`` budgets; returns a config whose journal lives
    in this test's tmp dir."""

    def make(budgets: dict[str, int], **config: Any) -> rc.CyclesConfig:
        tenant = "lc" + secrets.token_hex(5)
        key = server.provision(tenant, budgets, **config.pop("provision", {}))
        values: dict[str, Any] = {
            "base_url": server.base_url,
            "api_key": key,
            "tenant": tenant,
            "retry_initial_delay": 0.01,
            "retry_max_delay": 0.05,
            "journal_dir": str(tmp_path / "journal"),
        }
        values.update(config)
        return rc.CyclesConfig(**values)

    return make


def balance(client: rc.CyclesClient, scope: str = "") -> dict[str, int]:
    tenant = client.config.tenant
    want = f"tenant:{tenant}" + (f"/{scope}" if scope else "")
    for b in client.get_balances(tenant=tenant).balances:
        if b.scope == want:
            return {
                "remaining": b.remaining.amount,
                "reserved": b.reserved.amount if b.reserved else 0,
                "spent": b.spent.amount if b.spent else 0,
            }
    raise AssertionError(f"no balance for {want}")


@pytest.fixture
def client(provision: Provision) -> Iterator[rc.CyclesClient]:
    with rc.CyclesClient(provision({"": 10_000})) as c:
        yield c


KIND = {"action_kind": "llm.completion", "action_name": "openai:gpt-4o"}


# -- guards ------------------------------------------------------------------------------------


def test_guard_commits_actual_and_returns_the_rest(client: rc.CyclesClient) -> None:
    with guard(1_000, client=client, **KIND) as g:
        assert g.state is GuardState.HELD
        assert get_cycles_context() is g
        g.add_usage(400)
        g.add_usage(200)
    assert g.state is GuardState.COMMITTED
    assert g.settlement is not None
    assert g.settlement.settled
    assert balance(client) == {"remaining": 9_400, "reserved": 0, "spent": 600}
    assert get_cycles_context() is None


def test_error_before_the_action_ran_releases(client: rc.CyclesClient) -> None:
    with pytest.raises(RuntimeError), guard(1_000, client=client, **KIND) as g:
        raise RuntimeError("provider down")
    assert g.state is GuardState.RELEASED
    assert balance(client) == {"remaining": 10_000, "reserved": 0, "spent": 0}


def test_error_after_usage_commits_what_was_consumed(client: rc.CyclesClient) -> None:
    with pytest.raises(RuntimeError), guard(1_000, client=client, **KIND) as g:
        g.add_usage(300)
        raise RuntimeError("stream broke")
    assert g.state is GuardState.COMMITTED
    assert balance(client)["spent"] == 300


def test_missing_actual_after_run_commits_estimate_tagged(client: rc.CyclesClient) -> None:
    with guard(700, client=client, **KIND) as g:
        g.mark_ran()
    assert g.settlement is not None
    assert g.settlement.settled
    assert balance(client)["spent"] == 700
    detail = client.get_reservation(g.reservation_id or "")
    assert detail.status == rc.ReservationStatus.COMMITTED


def test_denial_raises_before_the_body_and_holds_nothing(client: rc.CyclesClient) -> None:
    ran = []
    with pytest.raises(rc.BudgetExceededError) as info, guard(20_000, client=client, **KIND):
        ran.append(1)
    assert ran == []
    assert info.value.error_code == "BUDGET_EXCEEDED"
    assert balance(client)["reserved"] == 0


def test_terminal_transitions_happen_once(client: rc.CyclesClient) -> None:
    h = reserve(500, client=client, **KIND)
    h.commit(100)
    with pytest.raises(rc.CyclesError):
        h.commit(100)
    h.release()  # a no-op after commit
    assert balance(client) == {"remaining": 9_900, "reserved": 0, "spent": 100}


def test_nested_guards_restore_the_outer_context(client: rc.CyclesClient) -> None:
    with guard(1_000, client=client, **KIND) as outer:
        with guard(100, client=client, **KIND) as inner:
            assert get_cycles_context() is inner
        assert get_cycles_context() is outer
        outer.add_usage(10)
    assert balance(client)["spent"] == 110


def test_denial_error_class_is_rebranded(client: rc.CyclesClient) -> None:
    class PluginDenied(rc.BudgetExceededError):
        pass

    with pytest.raises(PluginDenied) as info:
        reserve(50_000, client=client, denial_error=PluginDenied, **KIND)
    assert info.value.error_code == "BUDGET_EXCEEDED"
    assert info.value.request_id


# -- decorator ---------------------------------------------------------------------------------


def test_decorator_stops_the_runaway_loop(provision: Provision) -> None:
    with rc.CyclesClient(provision({"": 2_500})) as client:
        calls: list[int] = []

        @cycles(estimate=1_000, actual=lambda r: 800, client=client, **KIND)
        def call_model(i: int) -> str:
            calls.append(i)
            return f"answer {i}"

        with pytest.raises(rc.BudgetExceededError):
            for i in range(10):
                call_model(i)
        assert calls == [0, 1]
        assert balance(client) == {"remaining": 900, "reserved": 0, "spent": 1_600}


def test_decorator_callables_see_the_arguments(provision: Provision) -> None:
    with rc.CyclesClient(provision({"": 10_000, "workspace:w1": 5_000})) as client:

        @cycles(
            estimate=lambda n, ws: n * 10,
            actual=lambda result: len(result),
            workspace=lambda n, ws: ws,
            client=client,
            **KIND,
        )
        def work(n: int, ws: str) -> str:
            return "x" * n

        assert work(30, "w1") == "x" * 30
        assert balance(client, "workspace:w1")["spent"] == 30


def test_actual_callable_failure_commits_the_estimate(
    client: rc.CyclesClient, caplog: pytest.LogCaptureFixture
) -> None:
    @cycles(estimate=250, actual=lambda r: 1 // 0, client=client, **KIND)
    def work() -> str:
        return "ok"

    with caplog.at_level(logging.ERROR, logger="runcycles_core.decorator"):
        assert work() == "ok"
    assert balance(client)["spent"] == 250
    assert "committing the estimate" in caplog.text


def test_generator_commits_partial_usage_when_the_consumer_stops(client: rc.CyclesClient) -> None:
    @cycles(estimate=1_000, actual=lambda chunks: 10 * len(chunks), client=client, **KIND)
    def stream() -> Iterator[str]:
        for i in range(100):
            yield f"tok{i}"

    it = stream()
    got = [next(it) for _ in range(3)]
    it.close()  # the consumer breaks early
    assert got == ["tok0", "tok1", "tok2"]
    assert balance(client) == {"remaining": 9_970, "reserved": 0, "spent": 30}


def test_generator_runs_to_the_end(client: rc.CyclesClient) -> None:
    @cycles(estimate=1_000, actual=lambda chunks: 5 * len(chunks), client=client, **KIND)
    def stream() -> Iterator[int]:
        yield from range(7)

    assert list(stream()) == list(range(7))
    assert balance(client)["spent"] == 35


def test_generator_failing_before_first_chunk_releases(client: rc.CyclesClient) -> None:
    @cycles(estimate=1_000, client=client, **KIND)
    def stream() -> Iterator[int]:
        raise ValueError("bad request")
        yield 1

    with pytest.raises(ValueError, match="bad request"):
        list(stream())
    assert balance(client) == {"remaining": 10_000, "reserved": 0, "spent": 0}


def test_dry_run_decides_without_running(client: rc.CyclesClient) -> None:
    ran = []

    @cycles(estimate=500, dry_run=True, client=client, **KIND)
    def work() -> None:
        ran.append(1)

    decision = work()
    assert decision.decision == rc.Decision.ALLOW
    assert ran == []
    assert balance(client)["reserved"] == 0


# -- async -------------------------------------------------------------------------------------


def test_async_concurrency_admits_exactly_k(provision: Provision) -> None:
    cfg = provision({"": 5 * 1_000})
    bodies: list[int] = []

    async def main() -> list[str]:
        async with rc.AsyncCyclesClient(cfg) as client:

            @cycles(estimate=1_000, client=client, **KIND)
            async def call(i: int) -> int:
                await asyncio.sleep(0.05)
                bodies.append(i)
                return i

            async def one(i: int) -> str:
                try:
                    await call(i)
                except rc.BudgetExceededError:
                    return "denied"
                return "ran"

            return await asyncio.gather(*(one(i) for i in range(20)))

    outcomes = asyncio.run(main())
    assert outcomes.count("ran") == 5
    assert len(bodies) == 5
    with rc.CyclesClient(cfg) as c:
        assert balance(c) == {"remaining": 0, "reserved": 0, "spent": 5_000}


def test_async_generator_and_guard(provision: Provision) -> None:
    cfg = provision({"": 10_000})

    async def main() -> None:
        async with rc.AsyncCyclesClient(cfg) as client:

            @cycles(estimate=1_000, client=client, **KIND)
            async def stream() -> AsyncIterator[int]:
                for i in range(3):
                    get_cycles_context().add_usage(100)  # type: ignore[union-attr]
                    yield i

            assert [x async for x in stream()] == [0, 1, 2]

            async with aguard(500, client=client, **KIND) as g:
                g.add_usage(50)
            assert g.state is GuardState.COMMITTED

    asyncio.run(main())
    with rc.CyclesClient(cfg) as c:
        assert balance(c)["spent"] == 350


def test_cancelled_task_releases_its_hold(provision: Provision) -> None:
    cfg = provision({"": 10_000})

    async def main() -> None:
        async with rc.AsyncCyclesClient(cfg) as client:
            started = asyncio.Event()

            @cycles(estimate=1_000, client=client, **KIND)
            async def slow() -> None:
                started.set()
                await asyncio.sleep(30)

            task = asyncio.create_task(slow())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    with rc.CyclesClient(cfg) as c:
        assert balance(c) == {"remaining": 10_000, "reserved": 0, "spent": 0}


# -- shadow and outages ------------------------------------------------------------------------


def test_shadow_mode_never_blocks_and_never_charges(provision: Provision) -> None:
    with rc.CyclesClient(provision({"": 100})) as client:
        before = stats.snapshot()["shadow_denied"]

        @cycles(estimate=5_000, shadow=True, client=client, **KIND)
        def work() -> str:
            return "ran"

        assert work() == "ran"
        assert stats.snapshot()["shadow_denied"] == before + 1
        assert balance(client) == {"remaining": 100, "reserved": 0, "spent": 0}


def _dead_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_outage_fail_closed_raises_unavailable_not_denial(tmp_path: Path) -> None:
    cfg = rc.CyclesConfig(
        base_url=_dead_url(),
        api_key="k",
        tenant="t",
        retry_max_attempts=1,
        retry_initial_delay=0.0,
        journal_dir=str(tmp_path),
    )
    ran = []
    with (
        rc.CyclesClient(cfg) as client,
        pytest.raises(rc.CyclesUnavailableError) as info,
        guard(10, client=client, **KIND),
    ):
        ran.append(1)
    assert not isinstance(info.value, rc.BudgetExceededError)
    assert ran == []


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_outage_fail_open_runs_and_journals_the_spend(provision: Provision) -> None:
    real = provision({"": 10_000})
    down = rc.CyclesConfig(**{**_cfg_dict(real), "retry_max_attempts": 1})
    with rc.CyclesClient(down, transport=httpx.MockTransport(_refuse)) as client:
        with guard(100, client=client, outage_policy="fail_open", **KIND) as g:
            assert g.state is GuardState.UNGUARDED
            g.add_usage(42)
        assert g.settlement is not None
        assert g.settlement.pending
        pending = settler_for(client).journal.pending()
        assert [r.mode for r in pending] == ["event"]
    # The server comes back (same tenant, same journal): the spend reaches the ledger.
    with rc.CyclesClient(real) as up:
        assert settler_for(up).flush(timeout=10)
        assert balance(up)["spent"] == 42


def _cfg_dict(cfg: rc.CyclesConfig) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


# -- leases ------------------------------------------------------------------------------------


def test_heartbeat_keeps_a_short_lease_alive(provision: Provision) -> None:
    cfg = provision({"": 10_000}, read_timeout=0.5)
    with rc.CyclesClient(cfg) as client:
        before = stats.snapshot()["heartbeat_extends"]
        with guard(1_000, client=client, ttl_ms=4_000, grace_period_ms=0, **KIND) as g:
            first_expiry = g.expires_at_ms
            time.sleep(6)
            g.add_usage(10)
        assert stats.snapshot()["heartbeat_extends"] > before
        assert g.expires_at_ms is not None
        assert first_expiry is not None
        assert g.expires_at_ms > first_expiry
        assert g.settlement is not None
        assert g.settlement.settled
        assert not g.settlement.via_event
        assert balance(client)["spent"] == 10


def test_expired_commit_is_recovered_through_events(provision: Provision) -> None:
    cfg = provision({"": 10_000})
    with rc.CyclesClient(cfg) as client:
        with guard(
            1_000, client=client, ttl_ms=1_000, grace_period_ms=0, heartbeat=False, **KIND
        ) as g:
            time.sleep(1.6)
            g.add_usage(77)
        assert g.settlement is not None
        assert g.settlement.settled
        assert g.settlement.via_event
        # The hold returned on expiry and the actual was charged once, as an event.
        deadline = time.monotonic() + 10
        while balance(client)["reserved"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert balance(client) == {"remaining": 9_923, "reserved": 0, "spent": 77}


@pytest.mark.parametrize("ending", ["release", "commit"])
def test_cancelling_the_caller_mid_settlement_still_settles(
    provision: Provision, ending: str
) -> None:
    """The guard claims its terminal state before the first await; a cancellation landing on
    that await (stopping the heartbeat) must not leave the server holding the reservation."""
    cfg = provision({"": 10_000})

    async def main() -> tuple[AsyncGuard, rc.ReservationDetail]:
        async with rc.AsyncCyclesClient(cfg) as client:
            g = await aguard(1_000, client=client, **KIND).reserve()
            assert g._beat is not None  # a heartbeat task to await on the way out
            if ending == "commit":
                g.add_usage(250)
                task = asyncio.create_task(g.commit())
            else:
                task = asyncio.create_task(g.release())
            await asyncio.sleep(0)  # let it reach its first await
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(100):  # the settlement finishes on its own
                detail = await client.get_reservation(g.reservation_id or "")
                if detail.status != rc.ReservationStatus.ACTIVE:
                    break
                await asyncio.sleep(0.05)
            return g, detail

    _, detail = asyncio.run(main())
    want = rc.ReservationStatus.RELEASED if ending == "release" else rc.ReservationStatus.COMMITTED
    assert detail.status == want
    with rc.CyclesClient(cfg) as c:
        assert balance(c)["reserved"] == 0
        assert balance(c)["spent"] == (250 if ending == "commit" else 0)


def test_no_settlement_without_a_known_actual_when_the_estimate_may_not_stand_in(
    client: rc.CyclesClient,
) -> None:
    """CR-BOUNDARY-001 through the decorator: actual() fails and the estimate must not stand
    in, so nothing is committed or sent as an event; the failure reaches the caller."""

    def broken_actual(result: str) -> int:
        raise KeyError("usage missing from the provider response")

    @cycles(
        estimate=800,
        actual=broken_actual,
        use_estimate_if_actual_not_provided=False,
        client=client,
        heartbeat=False,
        **KIND,
    )
    def work() -> str:
        return "done"

    with pytest.raises(KeyError, match="usage missing"):
        work()
    # Held until it expires (no commit, no event, no release): spent is untouched.
    assert balance(client) == {"remaining": 9_200, "reserved": 800, "spent": 0}
    listed = client.list_reservations(tenant=client.config.tenant, status="ACTIVE")
    assert len(listed.reservations) == 1


def test_settlers_die_with_their_clients(provision: Provision) -> None:
    import gc
    import weakref

    cfg = provision({"": 1_000})
    client = rc.CyclesClient(cfg)
    with guard(10, client=client, heartbeat=False, **KIND) as g:
        g.add_usage(1)
    settler = weakref.ref(settler_for(client))
    assert settler_for(client.with_options(read_timeout=1.0)) is settler()  # views share it
    client.close()
    del client, g
    gc.collect()
    assert settler() is None


def test_shadow_and_outage_policy_per_client(provision: Provision) -> None:
    cfg = provision({"": 100}, shadow=True)
    with rc.CyclesClient(cfg) as client:
        with guard(5_000, client=client, **KIND) as g:  # over budget, but shadow never blocks
            assert g.state is GuardState.SHADOW
        assert balance(client) == {"remaining": 100, "reserved": 0, "spent": 0}
        # A call's own setting still wins over the client's.
        with pytest.raises(rc.BudgetExceededError):
            rc.reserve(5_000, client=client.with_options(shadow=False), **KIND)

    down = rc.CyclesConfig(
        **{**_cfg_dict(cfg), "shadow": False, "outage_policy": "fail_open", "retry_max_attempts": 1}
    )
    with (
        rc.CyclesClient(down, transport=httpx.MockTransport(_refuse)) as client,
        guard(10, client=client, **KIND) as g,
    ):
        assert g.state is GuardState.UNGUARDED
        g.add_usage(1)


def test_lifecycle_defaults_from_env() -> None:
    env = {
        "CYCLES_BASE_URL": "http://x",
        "CYCLES_API_KEY": "k",
        "CYCLES_SHADOW": "true",
        "CYCLES_OUTAGE_POLICY": "fail_open",
    }
    cfg = rc.CyclesConfig.from_env(environ=env)
    assert cfg.shadow is True
    assert cfg.outage_policy == "fail_open"
    with pytest.raises(ValueError, match="outage_policy"):
        rc.CyclesConfig.from_env(environ={**env, "CYCLES_OUTAGE_POLICY": "maybe"})
