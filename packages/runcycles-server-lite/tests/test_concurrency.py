"""Concurrent traffic over real HTTP: no oversubscription, exactly one settlement."""

from __future__ import annotations

import asyncio

import httpx
from runtime_support import ACTION, TenantFactory, amount, assert_identity, key, mk, short

__all__ = ["mk"]


async def _many(
    base_url: str,
    secret: str,
    requests: list[tuple[str, dict[str, object]]],
    connections: int = 100,
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-Cycles-API-Key": secret}, timeout=30, limits=limits
    ) as client:
        return await asyncio.gather(*(client.post(path, json=body) for path, body in requests))


def test_200_concurrent_reservations_admit_exactly_what_fits(mk: TenantFactory) -> None:
    k_fit, estimate = 37, 10
    t = mk(
        {"": 10_000, "workspace:w": k_fit * estimate + estimate - 1, "workspace:w/agent:a": 5_000}
    )
    subject = t.subject(workspace="w", agent="a")
    body = {"subject": subject, "action": ACTION, "estimate": amount(estimate)}
    reqs = [("/v1/reservations", {**body, "idempotency_key": key()}) for _ in range(200)]
    results = asyncio.run(_many(t.server.base_url, t.secret, reqs))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == k_fit
    assert codes.count(409) == 200 - k_fit
    assert {r.json()["error"] for r in results if r.status_code == 409} == {"BUDGET_EXCEEDED"}
    held = k_fit * estimate
    led = t.ledger()
    assert short(led, t.name) == {
        "": (10_000 - held, held, 0, 0),
        "workspace:w": (estimate - 1, held, 0, 0),
        "workspace:w/agent:a": (5_000 - held, held, 0, 0),
    }
    assert_identity(led)

    # Settle them all concurrently: half commit less than reserved, half release.
    rids = [r.json()["reservation_id"] for r in results if r.status_code == 200]
    settle: list[tuple[str, dict[str, object]]] = []
    for i, rid in enumerate(rids):
        if i % 2:
            settle.append(
                (f"/v1/reservations/{rid}/commit", {"idempotency_key": key(), "actual": amount(4)})
            )
        else:
            settle.append((f"/v1/reservations/{rid}/release", {"idempotency_key": key()}))
    assert {r.status_code for r in asyncio.run(_many(t.server.base_url, t.secret, settle))} == {200}
    spent = 4 * (len(rids) // 2)
    led = t.ledger()
    assert short(led, t.name)[""] == (10_000 - spent, 0, spent, 0)
    assert_identity(led)


def test_commit_and_release_race_has_exactly_one_winner(mk: TenantFactory) -> None:
    t = mk({"": 100_000})
    rids = [t.reserve_ok(100) for _ in range(40)]
    reqs: list[tuple[str, dict[str, object]]] = []
    for rid in rids:
        reqs.append(
            (f"/v1/reservations/{rid}/commit", {"idempotency_key": key(), "actual": amount(70)})
        )
        reqs.append((f"/v1/reservations/{rid}/release", {"idempotency_key": key()}))
    results = asyncio.run(_many(t.server.base_url, t.secret, reqs))
    commits = 0
    for i in range(0, len(results), 2):
        commit, release = results[i], results[i + 1]
        assert sorted([commit.status_code, release.status_code]) == [200, 409]
        loser = commit if commit.status_code == 409 else release
        assert loser.json()["error"] == "RESERVATION_FINALIZED"
        commits += commit.status_code == 200
    led = t.ledger()
    assert short(led, t.name)[""] == (100_000 - 70 * commits, 0, 70 * commits, 0)
    assert_identity(led)


def test_concurrent_replays_of_one_key_create_one_reservation(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    body = {
        "idempotency_key": key(),
        "subject": t.subject(),
        "action": ACTION,
        "estimate": amount(10),
    }
    results = asyncio.run(_many(t.server.base_url, t.secret, [("/v1/reservations", body)] * 50))
    assert {r.status_code for r in results} == {200}
    assert len({r.json()["reservation_id"] for r in results}) == 1
    assert short(t.ledger(), t.name) == {"": (990, 10, 0, 0)}


def test_a_burst_beyond_the_connection_pool_queues_instead_of_failing(mk: TenantFactory) -> None:
    # More simultaneous requests than the store's 256 pooled connections.
    t = mk({"": 1_000_000})
    body = {"subject": t.subject(), "action": ACTION, "estimate": amount(1)}
    reqs = [("/v1/reservations", {**body, "idempotency_key": key()}) for _ in range(300)]
    results = asyncio.run(_many(t.server.base_url, t.secret, reqs, connections=300))
    assert {r.status_code for r in results} == {200}
    assert short(t.ledger(), t.name) == {"": (1_000_000 - 300, 300, 0, 0)}
