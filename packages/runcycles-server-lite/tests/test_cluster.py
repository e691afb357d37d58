"""The same scripts on a real 3-node Redis Cluster: every tenant's keys share one slot."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runcycles_server_lite.embedded import EmbeddedCluster
from runcycles_server_lite.testing import ServerHandle, running_server


@pytest.fixture(scope="module")
def cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    data = tmp_path_factory.mktemp("cluster")
    with EmbeddedCluster(data) as cluster, running_server(data, redis_url=cluster.url) as srv:
        yield srv


def _reserve(http: httpx.Client, key: str, tenant: str, amount: int) -> httpx.Response:
    return http.post(
        "/v1/reservations",
        headers={"X-Cycles-API-Key": key},
        json={
            "idempotency_key": str(uuid.uuid4()),
            "subject": {"tenant": tenant, "workspace": "prod"},
            "action": {"kind": "llm.completion", "name": "m"},
            "estimate": {"unit": "USD_MICROCENTS", "amount": amount},
        },
    )


def test_reserve_commit_release_on_cluster(cluster_server: ServerHandle) -> None:
    # Several tenants so their slots land on different masters.
    with httpx.Client(base_url=cluster_server.base_url, timeout=10) as http:
        for i in range(6):
            tenant = f"cl-{i}-{uuid.uuid4().hex[:6]}"
            key = cluster_server.provision(tenant, {"": 1_000, "workspace:prod": 600})
            r = _reserve(http, key, tenant, 500)
            assert r.status_code == 200, r.text
            rid = r.json()["reservation_id"]
            commit = {
                "idempotency_key": str(uuid.uuid4()),
                "actual": {"unit": "USD_MICROCENTS", "amount": 300},
            }
            c = http.post(
                f"/v1/reservations/{rid}/commit", headers={"X-Cycles-API-Key": key}, json=commit
            )
            assert c.status_code == 200, c.text
            # The finalized record (read by the replay script and by GET) is in the slot too.
            again = http.post(
                f"/v1/reservations/{rid}/commit", headers={"X-Cycles-API-Key": key}, json=commit
            )
            assert (again.status_code, again.content) == (200, c.content)
            got = http.get(f"/v1/reservations/{rid}", headers={"X-Cycles-API-Key": key})
            assert got.json()["status"] == "COMMITTED", got.text
            assert _reserve(http, key, tenant, 400).status_code == 409  # 600 - 300 = 300 left
            b = http.get(
                "/v1/balances", headers={"X-Cycles-API-Key": key}, params={"tenant": tenant}
            )
            assert b.status_code == 200, b.text
            by_scope = {x["scope"]: x for x in b.json()["balances"]}
            leaf = by_scope[f"tenant:{tenant}/workspace:prod"]
            assert leaf["spent"]["amount"] == 300
            assert leaf["remaining"]["amount"] == 300


def test_concurrent_reservations_on_cluster_admit_exactly_k(cluster_server: ServerHandle) -> None:
    tenant = "clc-" + uuid.uuid4().hex[:6]
    key = cluster_server.provision(tenant, {"": 10 * 100})

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=cluster_server.base_url, timeout=20) as http:

            async def one() -> int:
                r = await http.post(
                    "/v1/reservations",
                    headers={"X-Cycles-API-Key": key},
                    json={
                        "idempotency_key": str(uuid.uuid4()),
                        "subject": {"tenant": tenant},
                        "action": {"kind": "llm.completion", "name": "m"},
                        "estimate": {"unit": "USD_MICROCENTS", "amount": 100},
                    },
                )
                return r.status_code

            return await asyncio.gather(*(one() for _ in range(40)))

    statuses = asyncio.run(go())
    assert statuses.count(200) == 10
    assert statuses.count(409) == 30


def test_cluster_url_forms(tmp_path: Path) -> None:
    from runcycles_server_lite.store import connect

    c = connect("redis://127.0.0.1:6379/0?cluster=true")
    assert type(c).__name__ == "RedisCluster"
