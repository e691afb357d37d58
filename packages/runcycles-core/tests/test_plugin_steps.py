"""Plugin-kit steps: a framework step run again under the same key is charged once, and a step
whose earlier attempt released (or expired) gets a fresh reservation."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runcycles_core as rc
from runcycles_core.lifecycle import GuardState
from runcycles_core.models import ReservationStatus
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    acommit_usage,
    areserve_model_step,
    commit_usage,
    reserve_model_step,
    reserve_tool_step,
)
from runcycles_core.pricing import Usage

USAGE = Usage(input_tokens=100, output_tokens=20)


@pytest.fixture
def settings(server: Any, tmp_path: Path) -> Iterator[CyclesSettings]:
    tenant = "step" + secrets.token_hex(5)
    key = server.provision(tenant, {"": 10**12})
    cfg = rc.CyclesConfig(
        base_url=server.base_url, api_key=key, tenant=tenant, journal_dir=str(tmp_path / "j")
    )
    with rc.CyclesClient(cfg) as client:
        yield CyclesSettings(client=client, tool_budgets={"search": 1_000})


def rows(settings: CyclesSettings) -> list[tuple[ReservationStatus, str]]:
    client = settings.sync_client()
    found = client.iter_reservations(
        tenant=client.config.tenant, sort_by="created_at_ms", sort_dir="asc"
    )
    return [(r.status, r.idempotency_key or "") for r in found]


def test_step_paid_by_an_earlier_attempt_is_not_charged_again(settings: CyclesSettings) -> None:
    call = ModelCall(model="gpt-4o", input_tokens=100, idempotency_key=f"s-{uuid.uuid4()}")
    first = reserve_model_step(settings, call)
    assert first is not None
    commit_usage(first, settings, "gpt-4o", USAGE)
    again = reserve_model_step(settings, call)
    assert again is None
    assert [s for s, _ in rows(settings)] == [ReservationStatus.COMMITTED]


def test_step_whose_earlier_attempt_released_reserves_afresh(settings: CyclesSettings) -> None:
    key = f"s-{uuid.uuid4()}"
    call = ModelCall(model="gpt-4o", input_tokens=100, idempotency_key=key)
    first = reserve_model_step(settings, call)
    assert first is not None
    first.release("provider failed")
    second = reserve_model_step(settings, call)
    assert second is not None and second.state is GuardState.HELD
    commit_usage(second, settings, "gpt-4o", USAGE)
    # A third attempt finds the committed retry by its deterministic key.
    assert reserve_model_step(settings, call) is None
    assert rows(settings) == [
        (ReservationStatus.RELEASED, f"{key}:reserve"),
        (ReservationStatus.COMMITTED, f"{key}:again1:reserve"),
    ]


def test_step_still_held_by_an_earlier_attempt_is_adopted(settings: CyclesSettings) -> None:
    call = ModelCall(model="gpt-4o", input_tokens=100, idempotency_key=f"s-{uuid.uuid4()}")
    first = reserve_model_step(settings, call)
    second = reserve_model_step(settings, call)
    assert first is not None and second is not None
    assert second.reservation_id == first.reservation_id
    commit_usage(second, settings, "gpt-4o", USAGE)
    first.release()  # the crashed attempt's guard: a no-op on a finalized reservation's key
    assert [s for s, _ in rows(settings)] == [ReservationStatus.COMMITTED]


def test_tool_step(settings: CyclesSettings) -> None:
    assert reserve_tool_step(settings, "calculator", idempotency_key="t-1") is None
    key = f"t-{uuid.uuid4()}"
    g = reserve_tool_step(settings, "search", idempotency_key=key)
    assert g is not None
    g.commit()
    assert reserve_tool_step(settings, "search", idempotency_key=key) is None


async def test_async_step(settings: CyclesSettings) -> None:
    call = ModelCall(model="gpt-4o", input_tokens=100, idempotency_key=f"s-{uuid.uuid4()}")
    try:
        first = await areserve_model_step(settings, call)
        assert first is not None
        await first.release()
        second = await areserve_model_step(settings, call)
        assert second is not None
        await acommit_usage(second, settings, "gpt-4o", USAGE)
        assert await areserve_model_step(settings, call) is None
    finally:
        await settings.async_client().aclose()
    assert [s for s, _ in rows(settings)] == [
        ReservationStatus.RELEASED,
        ReservationStatus.COMMITTED,
    ]
