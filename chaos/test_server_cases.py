"""On one embedded server: a retry storm (many concurrent copies of the same idempotent
requests charge once), a crashed client's reservations returned by the sweeper after TTL +
grace, and idle connections beyond the connection cap not starving the health endpoint."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from _harness import Load, Outage, Server, Tally, _budgets, new_tenant, poll, run_store, verify
from conftest import Counts

from bench.workload import ACTUAL, UNIT, check_ledger, reserve_body
from runcycles_server_lite.testing import spawn, stop_group


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A low connection cap and header deadline for the idle-connection case; the other
    # cases stay well under the cap (their clients share a bounded pool).
    server = Server(
        tmp_path_factory.mktemp("srv"), "--max-connections", "64", "--header-timeout", "1"
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_retry_storm_charges_once(
    srv: Server, counts: Counts, tally_for: Callable[[str], Tally]
) -> None:
    tally = tally_for(f"retry storm ({counts.storm_copies} copies/key)")
    tenant, key = new_tenant(srv.redis_url, "storm")
    load = Load(srv.url, key, tenant, tally, Outage())

    async def storm(http: httpx.AsyncClient, path: str, body: dict[str, object]) -> set[str]:
        got = await asyncio.gather(
            *(load.call(http, path, body) for _ in range(counts.storm_copies))
        )
        tally.count += 1
        return {json.dumps(g, sort_keys=True) for g in got}

    async def go() -> None:
        limits = httpx.Limits(max_connections=32)
        headers = {"X-Cycles-API-Key": key}
        async with httpx.AsyncClient(
            base_url=srv.url, headers=headers, timeout=10, limits=limits
        ) as http:
            for i in range(counts.storm_keys):
                answers = await storm(http, "/v1/reservations", reserve_body(tenant, i))
                ids = {json.loads(a)["reservation_id"] for a in answers}
                tally.duplicates += len(ids) - 1  # one key, one reservation
                (rid,) = sorted(ids)[:1]
                load.reserved.append(rid)
                body = {
                    "idempotency_key": uuid.uuid4().hex,
                    "actual": {"unit": UNIT, "amount": ACTUAL},
                }
                answers = await storm(http, f"/v1/reservations/{rid}/commit", body)
                tally.duplicates += len(answers) - 1  # every replay answers the same
                load.committed.append(rid)

    asyncio.run(go())
    verify(srv.url, srv.redis_url, load, tally)
    assert tally.zeros_ok(), tally


CRASHING_CLIENT = """
import json, sys, time, uuid, httpx
url, key, tenant, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with httpx.Client(base_url=url, headers={"X-Cycles-API-Key": key}, timeout=30) as http:
    for i in range(n):
        r = http.post("/v1/reservations", json={
            "idempotency_key": uuid.uuid4().hex,
            "subject": {"tenant": tenant, "workspace": "bench", "agent": f"a{i % 4}"},
            "action": {"kind": "llm.completion", "name": "m"},
            "estimate": {"unit": "USD_MICROCENTS", "amount": 1000},
            "ttl_ms": 1000, "grace_period_ms": 500})
        r.raise_for_status()
        print(r.json()["reservation_id"], flush=True)
time.sleep(3600)  # "working" until killed, never committing
"""


def test_crashed_client_reservations_are_swept(
    srv: Server, counts: Counts, tally_for: Callable[[str], Tally]
) -> None:
    tally = tally_for("client kill -9, TTL+grace sweep")
    tenant, key = new_tenant(srv.redis_url, "crash")
    n = counts.abandoned
    args = [sys.executable, "-c", CRASHING_CLIENT, srv.url, key, tenant, str(n)]
    client = spawn(args, stdout=subprocess.PIPE, text=True)
    try:
        ids = [client.stdout.readline().strip() for _ in range(n)]  # type: ignore[union-attr]
        assert all(ids), "the client failed before reserving"
        tally.acked = len(ids)
    finally:
        client.kill()  # kill -9: it never commits nor releases
        stop_group(client)
    tally.count = 1

    def returned() -> bool:
        return all(r == 0 for _, _, r in run_store(srv.redis_url, lambda s: _budgets(s, tenant)))

    # Bounded poll, not a timing assertion: the sweeper returns them once TTL + grace passed.
    poll(returned, "the crashed client's reservations were returned", timeout=60, interval=0.2)
    with httpx.Client(base_url=srv.url, headers={"X-Cycles-API-Key": key}, timeout=10) as http:
        bodies = [http.get(f"/v1/reservations/{rid}").json() for rid in ids]
    # An expired reservation reads as the protocol's RESERVATION_EXPIRED error.
    states = [b.get("error") or b.get("status") for b in bodies]
    tally.lost += sum(s != "RESERVATION_EXPIRED" for s in states)
    check = run_store(srv.redis_url, lambda s: check_ledger(s, tenant, 0, 0))
    tally.lost += check.mismatches
    if check.detail:
        tally.notes.append(check.detail)
    assert tally.zeros_ok(), (tally, states)


def test_idle_connections_beyond_the_cap_do_not_starve_health(
    srv: Server, tally_for: Callable[[str], Tally]
) -> None:
    """Past --max-connections uvicorn answers a bare 503, health included; connections that
    never send a request are closed by the header deadline, so health answers again while
    the idle clients still hold their sockets open."""
    tally = tally_for("idle connections > cap (64)")
    port = int(srv.url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(96)]
    tally.count = len(idle)
    try:

        def healthy() -> bool:
            try:
                ok = httpx.get(f"{srv.url}/actuator/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False
            tally.acked += ok
            return ok

        poll(healthy, "health answered with idle connections beyond the cap", timeout=30)
    finally:
        for sock in idle:
            sock.close()
