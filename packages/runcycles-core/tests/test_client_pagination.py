"""Pagination iterators follow next_cursor until has_more is false (sync and async)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import runcycles_core as rc

from .conftest import Recorder, make_config


def _row(i: int) -> dict[str, Any]:
    return {
        "reservation_id": f"r-{i}",
        "status": "COMMITTED",
        "subject": {"tenant": "acme"},
        "action": {"kind": "k", "name": "n"},
        "reserved": {"unit": "TOKENS", "amount": i},
        "committed": {"unit": "TOKENS", "amount": i},
        "created_at_ms": 1_000 + i,
        "expires_at_ms": 2_000 + i,
        "finalized_at_ms": 1_500 + i,
        "scope_path": "tenant:acme",
        "affected_scopes": ["tenant:acme"],
    }


def _balance(i: int) -> dict[str, Any]:
    return {
        "scope": f"tenant:acme/agent:a{i}",
        "scope_path": f"tenant:acme/agent:a{i}",
        "remaining": {"unit": "TOKENS", "amount": i},
    }


def _paged(items: list[dict[str, Any]], key: str, page: int) -> Any:
    """A handler serving ``items`` ``page`` at a time with opaque cursors."""

    def handler(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "c0")[1:])
        limit = int(request.url.params.get("limit", str(page)))
        chunk = items[start : start + limit]
        body: dict[str, Any] = {key: chunk, "has_more": start + limit < len(items)}
        if body["has_more"]:
            body["next_cursor"] = f"c{start + limit}"
        return httpx.Response(200, json=body)

    return handler


def test_iter_reservations_walks_every_page(recorder: Recorder) -> None:
    recorder.handler = _paged([_row(i) for i in range(7)], "reservations", 3)
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        rows = list(client.iter_reservations(status="COMMITTED", page_size=3))
    assert [r.reservation_id for r in rows] == [f"r-{i}" for i in range(7)]
    assert all(isinstance(r, rc.ReservationSummary) for r in rows)
    cursors = [r.url.params.get("cursor") for r in recorder.requests]
    assert cursors == [None, "c3", "c6"]
    assert {r.url.params["status"] for r in recorder.requests} == {"COMMITTED"}
    assert {r.url.params["limit"] for r in recorder.requests} == {"3"}


async def test_async_iter_reservations_walks_every_page(recorder: Recorder) -> None:
    recorder.handler = _paged([_row(i) for i in range(5)], "reservations", 2)
    async with rc.AsyncCyclesClient(make_config(), transport=recorder.async_transport()) as client:
        rows = [r async for r in client.iter_reservations(page_size=2, workspace="prod")]
    assert [r.reservation_id for r in rows] == [f"r-{i}" for i in range(5)]
    assert len(recorder.requests) == 3
    assert {r.url.params["workspace"] for r in recorder.requests} == {"prod"}


def test_iter_balances_walks_every_page(recorder: Recorder) -> None:
    recorder.handler = _paged([_balance(i) for i in range(4)], "balances", 2)
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        balances = list(client.iter_balances(page_size=2))
    assert [b.remaining.amount for b in balances] == [0, 1, 2, 3]
    assert {r.url.params["tenant"] for r in recorder.requests} == {"acme"}
    assert [r.url.params.get("cursor") for r in recorder.requests] == [None, "c2"]


async def test_async_iter_balances_walks_every_page(recorder: Recorder) -> None:
    recorder.handler = _paged([_balance(i) for i in range(3)], "balances", 1)
    async with rc.AsyncCyclesClient(make_config(), transport=recorder.async_transport()) as client:
        balances = [b async for b in client.iter_balances(page_size=1, agent="a1")]
    assert len(balances) == 3
    assert len(recorder.requests) == 3
    assert {r.url.params["agent"] for r in recorder.requests} == {"a1"}


@pytest.mark.parametrize("body", [{"balances": [], "has_more": True}, {"balances": []}])
def test_iteration_stops_without_a_cursor(recorder: Recorder, body: dict[str, Any]) -> None:
    recorder.reply(200, body)
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        assert list(client.iter_balances()) == []
    assert len(recorder.requests) == 1


def test_iteration_can_resume_from_a_cursor(recorder: Recorder) -> None:
    recorder.handler = _paged([_row(i) for i in range(4)], "reservations", 2)
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        rows = list(client.iter_reservations(cursor="c2", page_size=2))
    assert [r.reservation_id for r in rows] == ["r-2", "r-3"]
