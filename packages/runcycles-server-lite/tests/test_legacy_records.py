"""Records an older server-lite wrote (whole responses in hashes) still replay after an
upgrade: the reserve idempotency hash, and a reservation finalized in its hash."""

from __future__ import annotations

import uuid
from typing import Any

from runtime_support import ACTION, TenantFactory, amount, key, mk

from runcycles_server_lite.models import (
    CommitRequest,
    ReservationCreateRequest,
    parse,
    payload_hash,
)
from runcycles_server_lite.store import Store

__all__ = ["mk"]


def test_an_old_reserve_idempotency_hash_still_replays(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    k = key()
    body: dict[str, Any] = {
        "idempotency_key": k,
        "subject": t.subject(),
        "action": ACTION,
        "estimate": amount(10),
        "ttl_ms": 60_000,
    }
    first = t.http.post("/v1/reservations", json=body)
    assert first.status_code == 200
    rid, expires = first.json()["reservation_id"], first.json()["expires_at_ms"]
    digest = payload_hash(parse(ReservationCreateRequest, body))

    async def downgrade(store: Store) -> None:
        idem = store.keys.idempotency(t.name, "reserve", k)
        await store.redis.delete(idem)
        await store.redis.hset(
            idem,
            mapping={
                "hash": digest,
                "kind": "live",
                "body_a": f'{{"old":"{rid}","remaining_ttl_ms":',
                "body_b": "}",
                "res_key": store.keys.reservation(t.name, rid),
                "expires_at": str(expires),
            },
        )

    t.server.run_store(downgrade)
    replay = t.http.post("/v1/reservations", json=body)
    assert replay.status_code == 200
    assert replay.json()["old"] == rid
    assert 0 < replay.json()["remaining_ttl_ms"] <= 60_000
    other = t.http.post("/v1/reservations", json={**body, "estimate": amount(11)})
    assert other.json()["error"] == "IDEMPOTENCY_MISMATCH"
    # The old ACTIVE reservation settles on the new layout.
    assert t.commit(rid, 5).status_code == 200
    assert t.http.post("/v1/reservations", json=body).json()["remaining_ttl_ms"] == 0


def test_a_reservation_finalized_in_its_hash_still_replays(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = f"res_{t.name}_{uuid.uuid4().hex}"
    ck = key()
    commit = {"idempotency_key": ck, "actual": amount(7)}
    digest = payload_hash(parse(CommitRequest, commit), extra={"reservation_id": rid})
    stored = '{"status":"COMMITTED","charged":{"unit":"USD_MICROCENTS","amount":7}}'

    async def old_record(store: Store) -> None:
        scope = f"tenant:{t.name}"
        await store.redis.hset(
            store.keys.reservation(t.name, rid),
            mapping={
                "reservation_id": rid,
                "tenant": t.name,
                "status": "COMMITTED",
                "subject_json": f'{{"tenant":"{t.name}"}}',
                "action_json": '{"kind":"llm.completion","name":"openai:gpt-4o"}',
                "unit": "USD_MICROCENTS",
                "estimate": "10",
                "scope_path": scope,
                "affected_json": f'["{scope}"]',
                "created_at": "1000",
                "expires_at": "2000",
                "finalized_at": "1500",
                "charged": "7",
                "commit_key": ck,
                "commit_hash": digest,
                "commit_body": stored,
            },
        )
        await store.redis.zadd(store.keys.reservation_index(t.name), {rid: 1000})

    t.server.run_store(old_record)
    replay = t.commit(rid, 7, idempotency_key=ck)
    assert (replay.status_code, replay.text) == (200, stored)
    assert t.commit(rid, 8, idempotency_key=ck).json()["error"] == "IDEMPOTENCY_MISMATCH"
    assert t.commit(rid, 7).json()["error"] == "RESERVATION_FINALIZED"
    got = t.http.get(f"/v1/reservations/{rid}").json()
    assert (got["status"], got["committed"]["amount"], got["affected_scopes"]) == (
        "COMMITTED",
        7,
        [f"tenant:{t.name}"],
    )
