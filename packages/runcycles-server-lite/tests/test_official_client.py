"""Drop-in check: the official ``runcycles`` client from PyPI, unchanged, against our server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import runcycles
from runcycles import (
    Action,
    Amount,
    AsyncCyclesClient,
    BudgetExceededError,
    CommitRequest,
    CyclesClient,
    CyclesConfig,
    CyclesMetrics,
    DecisionRequest,
    EventCreateRequest,
    ReleaseRequest,
    ReservationCreateRequest,
    Subject,
    Unit,
    cycles,
)

from runcycles_server_lite.testing import ServerHandle

UNIT = Unit.USD_MICROCENTS


def _key() -> str:
    return str(uuid.uuid4())


def _config(server: ServerHandle, api_key: str, tenant: str, journal: Path) -> CyclesConfig:
    return CyclesConfig(
        base_url=server.base_url,
        api_key=api_key,
        tenant=tenant,
        retry_enabled=False,
        journal_dir=str(journal),
    )


@pytest.fixture
def official(server: ServerHandle, tmp_path: Path) -> Iterator[tuple[CyclesClient, str]]:
    tenant = "official-" + uuid.uuid4().hex[:8]
    api_key = server.provision(tenant, {"": 10_000, "workspace:prod": 5_000})
    with CyclesClient(_config(server, api_key, tenant, tmp_path / "journal")) as client:
        yield client, tenant


def _balances(client: CyclesClient, tenant: str) -> dict[str, dict[str, int]]:
    resp = client.get_balances(tenant=tenant)
    assert resp.is_success, resp.error_message
    assert resp.body is not None
    out: dict[str, dict[str, int]] = {}
    for b in resp.body["balances"]:
        out[b["scope"]] = {k: b[k]["amount"] for k in ("remaining", "reserved", "spent")}
    return out


def test_reserve_commit_release_decide_balances_events(
    official: tuple[CyclesClient, str],
) -> None:
    client, tenant = official
    subject = Subject(tenant=tenant, workspace="prod")
    action = Action(kind="llm.completion", name="openai:gpt-4o")

    decision = client.decide(
        DecisionRequest(
            idempotency_key=_key(),
            subject=subject,
            action=action,
            estimate=Amount(unit=UNIT, amount=100),
        )
    )
    assert decision.is_success, decision.error_message
    assert decision.body is not None and decision.body["decision"] == "ALLOW"

    reserved = client.create_reservation(
        ReservationCreateRequest(
            idempotency_key=_key(),
            subject=subject,
            action=action,
            estimate=Amount(unit=UNIT, amount=1_000),
            ttl_ms=30_000,
        )
    )
    assert reserved.is_success, reserved.error_message
    assert reserved.body is not None
    res_id = reserved.body["reservation_id"]
    assert reserved.body["decision"] == "ALLOW"
    assert _balances(client, tenant)[f"tenant:{tenant}/workspace:prod"]["reserved"] == 1_000

    committed = client.commit_reservation(
        res_id,
        CommitRequest(
            idempotency_key=_key(),
            actual=Amount(unit=UNIT, amount=600),
            metrics=CyclesMetrics(tokens_input=10, tokens_output=20),
        ),
    )
    assert committed.is_success, committed.error_message
    assert committed.body is not None and committed.body["status"] == "COMMITTED"
    bal = _balances(client, tenant)
    assert bal[f"tenant:{tenant}/workspace:prod"] == {
        "remaining": 4_400,
        "reserved": 0,
        "spent": 600,
    }
    assert bal[f"tenant:{tenant}"] == {"remaining": 9_400, "reserved": 0, "spent": 600}

    second = client.create_reservation(
        ReservationCreateRequest(
            idempotency_key=_key(),
            subject=subject,
            action=action,
            estimate=Amount(unit=UNIT, amount=200),
        )
    )
    assert second.is_success and second.body is not None
    released = client.release_reservation(
        second.body["reservation_id"], ReleaseRequest(idempotency_key=_key(), reason="not needed")
    )
    assert released.is_success, released.error_message
    assert released.body is not None and released.body["status"] == "RELEASED"

    event = client.create_event(
        EventCreateRequest(
            idempotency_key=_key(),
            subject=subject,
            action=action,
            actual=Amount(unit=UNIT, amount=50),
        )
    )
    assert event.status == 201, event.error_message
    assert _balances(client, tenant)[f"tenant:{tenant}/workspace:prod"]["spent"] == 650

    got = client.get_reservation(res_id)
    assert got.is_success and got.body is not None and got.body["status"] == "COMMITTED"
    listed = client.list_reservations(tenant=tenant)
    assert listed.is_success and listed.body is not None
    assert {r["reservation_id"] for r in listed.body["reservations"]} >= {res_id}


def test_denial_is_a_409_the_official_client_understands(
    official: tuple[CyclesClient, str],
) -> None:
    client, tenant = official
    resp = client.create_reservation(
        ReservationCreateRequest(
            idempotency_key=_key(),
            subject=Subject(tenant=tenant, workspace="prod"),
            action=Action(kind="llm.completion", name="m"),
            estimate=Amount(unit=UNIT, amount=5_001),
        )
    )
    assert resp.status == 409
    assert resp.body is not None and resp.body["error"] == "BUDGET_EXCEEDED"


def test_official_decorator_enforces_budget(server: ServerHandle, tmp_path: Path) -> None:
    tenant = "official-deco-" + uuid.uuid4().hex[:8]
    api_key = server.provision(tenant, {"": 2_500})
    client = CyclesClient(_config(server, api_key, tenant, tmp_path / "journal"))
    calls: list[int] = []

    @cycles(
        estimate=1_000,
        actual=lambda result: 800,
        action_kind="llm.completion",
        action_name="m",
        client=client,
    )
    def call_model(i: int) -> str:
        calls.append(i)
        return f"answer {i}"

    assert call_model(1) == "answer 1"
    assert call_model(2) == "answer 2"
    # 2_500 - 2 * 800 = 900 left: a 1_000 estimate is denied before the body runs.
    with pytest.raises(BudgetExceededError):
        call_model(3)
    assert calls == [1, 2]
    assert _balances(client, tenant)[f"tenant:{tenant}"] == {
        "remaining": 900,
        "reserved": 0,
        "spent": 1_600,
    }
    client.close()


def test_official_async_client(server: ServerHandle, tmp_path: Path) -> None:
    tenant = "official-async-" + uuid.uuid4().hex[:8]
    api_key = server.provision(tenant, {"": 1_000})

    async def go() -> list[int]:
        async with AsyncCyclesClient(_config(server, api_key, tenant, tmp_path / "j")) as client:

            async def one() -> int:
                r = await client.create_reservation(
                    ReservationCreateRequest(
                        idempotency_key=_key(),
                        subject=Subject(tenant=tenant),
                        action=Action(kind="llm.completion", name="m"),
                        estimate=Amount(unit=UNIT, amount=300),
                    )
                )
                return r.status

            return await asyncio.gather(*(one() for _ in range(5)))

    statuses = asyncio.run(go())
    assert sorted(statuses) == [200, 200, 200, 409, 409]


def test_official_client_version_is_0_5() -> None:
    assert runcycles.__name__ == "runcycles"
    from importlib.metadata import version

    assert version("runcycles").startswith("0.5.")
