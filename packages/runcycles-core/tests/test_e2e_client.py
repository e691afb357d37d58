"""End to end against the real server-lite (embedded Redis, real HTTP): every operation of the
sync and async clients, denials, idempotency, errors, pagination and outages."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import runcycles_core as rc

ACTION = rc.Action(kind="llm.completion", name="openai:gpt-4o")
USD = rc.Amount.usd_microcents

Provision = Callable[..., rc.CyclesConfig]


@pytest.fixture
def provision(server: Any) -> Provision:
    """Create a fresh tenant with ``{scope: allocated}`` budgets; return a config for it."""

    def make(budgets: dict[str, int], **config: Any) -> rc.CyclesConfig:
        tenant = "t" + secrets.token_hex(5)
        key = server.provision(tenant, budgets, unit=config.pop("unit", "USD_MICROCENTS"))
        return rc.CyclesConfig(
            base_url=server.base_url,
            api_key=key,
            tenant=tenant,
            retry_initial_delay=0.01,
            retry_max_delay=0.05,
            **config,
        )

    return make


@pytest.fixture
def client(provision: Provision) -> Iterator[rc.CyclesClient]:
    with rc.CyclesClient(provision({"": 10_000, "workspace:prod": 5_000}, workspace="prod")) as c:
        yield c


def _remaining(balances: list[rc.Balance] | None, scope_suffix: str = "") -> int:
    assert balances is not None
    for b in balances:
        if b.scope.endswith(scope_suffix) and (scope_suffix or "/" not in b.scope):
            return b.remaining.amount
    raise AssertionError(f"no balance for {scope_suffix!r} in {balances}")


# -- sync ---------------------------------------------------------------------------------------


def test_reserve_get_extend_commit(client: rc.CyclesClient) -> None:
    tenant = client.config.tenant
    created = client.create_reservation(action=ACTION, estimate=USD(1_000), ttl_ms=30_000)
    assert created.decision is rc.Decision.ALLOW
    assert created.reservation_id is not None
    assert created.affected_scopes == [f"tenant:{tenant}", f"tenant:{tenant}/workspace:prod"]
    assert created.meta is not None
    assert created.meta.tenant == tenant
    rid = created.reservation_id

    detail = client.get_reservation(rid)
    assert detail.status is rc.ReservationStatus.ACTIVE
    assert detail.reserved == USD(1_000)
    assert detail.subject == rc.Subject(tenant=tenant, workspace="prod")

    extended = client.extend_reservation(rid, extend_by_ms=5_000)
    assert created.expires_at_ms is not None
    assert extended.expires_at_ms == created.expires_at_ms + 5_000

    committed = client.commit_reservation(
        rid, actual=USD(600), metrics={"tokens_input": 12, "tokens_output": 34}
    )
    assert committed.charged == USD(600)
    assert committed.released == USD(400)
    assert _remaining(committed.balances) == 10_000 - 600

    final = client.get_reservation(rid)
    assert final.status is rc.ReservationStatus.COMMITTED
    assert final.committed == USD(600)
    assert _remaining(client.get_balances().balances, "workspace:prod") == 5_000 - 600


def test_release_returns_the_budget(client: rc.CyclesClient) -> None:
    created = client.create_reservation(action=ACTION, estimate=USD(4_000))
    assert created.reservation_id is not None
    assert _remaining(created.balances, "workspace:prod") == 1_000
    released = client.release_reservation(created.reservation_id, reason="action cancelled")
    assert released.released == USD(4_000)
    assert _remaining(client.get_balances().balances, "workspace:prod") == 5_000
    with pytest.raises(rc.ReservationFinalizedError) as info:
        client.commit_reservation(created.reservation_id, actual=USD(1))
    assert info.value.status == 409


def test_denial_is_a_budget_exceeded_error_with_ids(client: rc.CyclesClient) -> None:
    trace_id = secrets.token_hex(16)
    with pytest.raises(rc.BudgetExceededError) as info:
        client.create_reservation(action=ACTION, estimate=USD(5_001), trace_id=trace_id)
    err = info.value
    assert isinstance(err, rc.InsufficientBudgetError)
    assert (err.status, err.error_code) == (409, "BUDGET_EXCEEDED")
    assert err.trace_id == trace_id
    assert err.request_id
    assert not isinstance(err, rc.CyclesUnavailableError)


def test_dry_run_and_decide_deny_without_raising(client: rc.CyclesClient) -> None:
    dry = client.create_reservation(action=ACTION, estimate=USD(9_999), dry_run=True)
    assert dry.decision is rc.Decision.DENY
    assert dry.reason_code == "BUDGET_EXCEEDED"
    assert dry.reservation_id is None
    allowed = client.decide(action=ACTION, estimate=USD(100))
    assert allowed.is_allowed()
    denied = client.decide(action=ACTION, estimate=USD(50_000))
    assert denied.is_denied()
    assert denied.reason_code == "BUDGET_EXCEEDED"
    assert _remaining(client.get_balances().balances, "workspace:prod") == 5_000


def test_event_debits_directly(client: rc.CyclesClient) -> None:
    event = client.create_event(action=ACTION, actual=USD(77), metrics={"latency_ms": 5})
    assert event.status is rc.EventStatus.APPLIED
    assert event.event_id
    assert event.meta is not None
    assert event.meta.status == 201
    assert _remaining(client.get_balances().balances) == 10_000 - 77


def test_replay_returns_the_original_and_mismatch_is_rejected(client: rc.CyclesClient) -> None:
    request = rc.ReservationCreateRequest(
        subject=client.subject(), action=ACTION, estimate=USD(100)
    )
    first = client.create_reservation(request)
    again = client.create_reservation(request)
    assert again.reservation_id == first.reservation_id
    assert _remaining(client.get_balances().balances) == 10_000 - 100
    changed = request.model_copy(update={"estimate": USD(101)})
    with pytest.raises(rc.IdempotencyMismatchError):
        client.create_reservation(changed)


def test_unit_mismatch_and_not_found(client: rc.CyclesClient) -> None:
    with pytest.raises(rc.UnitMismatchError) as info:
        client.create_reservation(action=ACTION, estimate=rc.Amount.tokens(10))
    assert info.value.status == 400
    with pytest.raises(rc.NotFoundError):
        client.get_reservation("res_does_not_exist")
    with pytest.raises(rc.NotFoundError):
        client.commit_reservation("res_missing", actual=USD(1))


def test_bad_api_key_is_an_authentication_error(server: Any) -> None:
    config = rc.CyclesConfig(base_url=server.base_url, api_key="cyc_wrong", tenant="acme")
    with rc.CyclesClient(config) as c, pytest.raises(rc.AuthenticationError) as info:
        c.get_balances()
    assert info.value.status == 401
    assert not info.value.is_denial


def test_other_tenants_subject_is_forbidden(client: rc.CyclesClient) -> None:
    with pytest.raises(rc.ForbiddenError):
        client.create_reservation(
            subject={"tenant": "someone-else"}, action=ACTION, estimate=USD(1)
        )


def test_expired_reservation_commit_is_410(provision: Provision) -> None:
    with rc.CyclesClient(provision({"": 1_000})) as c:
        created = c.create_reservation(
            action=ACTION, estimate=USD(10), ttl_ms=1_000, grace_period_ms=0
        )
        assert created.reservation_id is not None
        time.sleep(1.2)
        with pytest.raises(rc.ReservationExpiredError) as info:
            c.commit_reservation(created.reservation_id, actual=USD(10))
    assert info.value.status == 410
    assert info.value.is_reservation_expired()


def test_iter_reservations_and_balances_across_pages(provision: Provision) -> None:
    budgets = {"": 100_000, **{f"agent:a{i}": 1_000 for i in range(5)}}
    with rc.CyclesClient(provision(budgets)) as c:
        ids = set()
        for i in range(5):
            r = c.create_reservation(
                subject=c.subject(agent=f"a{i}"), action=ACTION, estimate=USD(10 + i)
            )
            ids.add(r.reservation_id)
        first_page = c.list_reservations(limit=2)
        assert len(first_page.reservations) == 2
        assert first_page.has_more is True
        listed = list(c.iter_reservations(page_size=2))
        assert {r.reservation_id for r in listed} == ids
        assert len(listed) == 5
        active = list(c.iter_reservations(page_size=3, status="ACTIVE", agent="a3"))
        assert [r.reserved.amount for r in active] == [13]
        scopes = [b.scope for b in c.iter_balances(page_size=2)]
    assert len(scopes) == 6
    assert len(set(scopes)) == 6


def test_server_down_is_unavailable_not_denied() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = rc.CyclesConfig(
        base_url=f"http://127.0.0.1:{port}",
        api_key="k",
        tenant="acme",
        retry_max_attempts=2,
        retry_initial_delay=0.01,
    )
    with rc.CyclesClient(config) as c, pytest.raises(rc.CyclesUnavailableError) as info:
        c.create_reservation(action=ACTION, estimate=USD(1))
    assert isinstance(info.value, rc.CyclesTransportError)
    assert info.value.attempts == 3
    assert not isinstance(info.value, rc.BudgetExceededError)


# -- async --------------------------------------------------------------------------------------


async def test_async_reserve_extend_commit_release(provision: Provision) -> None:
    async with rc.AsyncCyclesClient(provision({"": 10_000})) as c:
        created = await c.create_reservation(action=ACTION, estimate=USD(2_000))
        assert created.reservation_id is not None
        rid = created.reservation_id
        extended = await c.extend_reservation(rid, extend_by_ms=1_000)
        assert extended.status is rc.ExtendStatus.ACTIVE
        detail = await c.get_reservation(rid)
        assert detail.expires_at_ms == extended.expires_at_ms
        committed = await c.commit_reservation(rid, actual=USD(1_500))
        assert committed.charged == USD(1_500)

        other = await c.create_reservation(action=ACTION, estimate=USD(1_000))
        assert other.reservation_id is not None
        released = await c.release_reservation(other.reservation_id)
        assert released.released == USD(1_000)

        event = await c.create_event(action=ACTION, actual=USD(5))
        assert event.event_id
        decision = await c.decide(action=ACTION, estimate=USD(1))
        assert decision.is_allowed()
        balances = await c.get_balances()
        assert _remaining(balances.balances) == 10_000 - 1_500 - 5
        rows = [r async for r in c.iter_reservations(page_size=1)]
        assert {r.status for r in rows} == {
            rc.ReservationStatus.COMMITTED,
            rc.ReservationStatus.RELEASED,
        }
        listed = [b async for b in c.iter_balances(page_size=1)]
        assert len(listed) == 1


async def test_async_denial_and_errors(provision: Provision) -> None:
    async with rc.AsyncCyclesClient(provision({"": 100})) as c:
        with pytest.raises(rc.BudgetExceededError):
            await c.create_reservation(action=ACTION, estimate=USD(101))
        with pytest.raises(rc.NotFoundError):
            await c.get_reservation("res_nope")
        dry = await c.create_reservation(action=ACTION, estimate=USD(101), dry_run=True)
        assert dry.is_denied()


async def test_async_concurrent_reservations_never_oversubscribe(provision: Provision) -> None:
    async with rc.AsyncCyclesClient(provision({"": 1_000})) as c:

        async def attempt() -> str:
            try:
                await c.create_reservation(action=ACTION, estimate=USD(100))
            except rc.BudgetExceededError:
                return "denied"
            return "held"

        outcomes = await asyncio.gather(*(attempt() for _ in range(25)))
        assert outcomes.count("held") == 10
        assert outcomes.count("denied") == 15
        balances = await c.get_balances()
        assert _remaining(balances.balances) == 0


# -- lost responses: the same-key retry settles exactly once on the real server ------------------


class LosingTransport(httpx.HTTPTransport):
    """Delivers each request to the server but loses the first ``lose`` responses."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = super().handle_request(request)
        response.read()
        if self.lose > 0:
            self.lose -= 1
            raise httpx.ReadTimeout("response lost", request=request)
        return response


class AsyncLosingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = await super().handle_async_request(request)
        await response.aread()
        if self.lose > 0:
            self.lose -= 1
            raise httpx.ReadTimeout("response lost", request=request)
        return response


def test_lost_responses_are_retried_with_the_same_key(provision: Provision) -> None:
    config = provision({"": 10_000})
    transport = LosingTransport(lose=2)
    with rc.CyclesClient(config, transport=transport) as c:
        created = c.create_reservation(action=ACTION, estimate=USD(1_000))
        assert created.meta is not None
        assert created.meta.attempts == 3
        keys = {r.headers["X-Idempotency-Key"] for r in transport.sent}
        assert len(keys) == 1
        assert created.reservation_id is not None
        listed = c.list_reservations(idempotency_key=keys.pop())
        assert [r.reservation_id for r in listed.reservations] == [created.reservation_id]

        transport.lose = 1
        committed = c.commit_reservation(created.reservation_id, actual=USD(400))
        assert committed.charged == USD(400)
        assert committed.meta is not None
        assert committed.meta.attempts == 2
        balance = c.get_balances().balances[0]
    assert balance.spent == USD(400)
    assert balance.reserved == USD(0)
    assert balance.remaining.amount == 10_000 - 400


async def test_async_lost_event_response_debits_once(provision: Provision) -> None:
    transport = AsyncLosingTransport(lose=1)
    async with rc.AsyncCyclesClient(provision({"": 10_000}), transport=transport) as c:
        event = await c.create_event(action=ACTION, actual=USD(250))
        assert event.meta is not None
        assert event.meta.attempts == 2
        assert len(transport.sent) == 2
        assert transport.sent[0].content == transport.sent[1].content
        balances = await c.get_balances()
    assert _remaining(balances.balances) == 10_000 - 250


def test_threads_share_one_client_without_oversubscribing(provision: Provision) -> None:
    with rc.CyclesClient(provision({"": 1_000})) as c:

        def attempt(_: int) -> str:
            try:
                c.create_reservation(action=ACTION, estimate=USD(100))
            except rc.BudgetExceededError:
                return "denied"
            return "held"

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(attempt, range(20)))
        assert outcomes.count("held") == 10
        assert _remaining(c.get_balances().balances) == 0
