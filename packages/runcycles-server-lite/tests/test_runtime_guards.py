"""Guards enforced inside the scripts themselves, and request validation on the other POSTs."""

from __future__ import annotations

import pytest
from runtime_support import ACTION, UNIT, TenantFactory, amount, key, mk, short

from runcycles_server_lite.keys import UNITS
from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle

__all__ = ["mk"]


def test_ownership_is_rechecked_inside_the_scripts(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100)

    async def disown(store: Store) -> None:
        await store.redis.hset(store.keys.reservation(t.name, rid), "tenant", "someone-else")

    t.server.run_store(disown)
    for r in (
        t.commit(rid, 1),
        t.release(rid),
        t.extend(rid, 1000),
        t.http.get(f"/v1/reservations/{rid}"),
    ):
        assert r.status_code == 403
        assert r.json()["error"] == "FORBIDDEN"
    assert short(t.ledger(), t.name) == {"": (900, 100, 0, 0)}


def test_no_tenant_record_means_no_tenant_guard(server: ServerHandle) -> None:
    # Runtime-only deployments have no tenant records; the scripts must not require one.
    tenant = "no-record-" + key()[:8]
    scope = f"tenant:{tenant}"

    async def go(store: Store) -> list[str]:
        k = store.keys
        budget = k.budget(tenant, scope, UNIT)
        await store.redis.hset(
            budget,
            mapping={
                "allocated": "50",
                "remaining": "50",
                "reserved": "0",
                "spent": "0",
                "debt": "0",
            },
        )
        rid = f"res_{tenant}_{'a' * 32}"
        keys = [
            k.tenant(tenant),
            k.idempotency(tenant, "reserve", "i"),
            k.reservation(tenant, rid),
            k.reservation_index(tenant),
            k.reservation_expiry(tenant),
            k.budgets(tenant),
            budget,
            k.events(tenant),
        ]
        args = ["live", tenant, rid, "i", "v1:h", "20", UNIT, "", "5000", "", "{}", "{}", ""]
        args += ["1000", "1000", ",".join(UNITS), "1", scope, '"tenant_id":"x"']
        result: list[str] = await store.run("reserve", keys, args)
        return [result[0], await store.redis.hget(budget, "remaining")]

    assert server.run_store(go) == ["OK", "30"]


@pytest.mark.parametrize(
    ("path", "patch", "field"),
    [
        ("/v1/decide", {"dry_run": True}, "dry_run"),
        ("/v1/decide", {"estimate": {"unit": UNIT, "amount": -1}}, "estimate.amount"),
        ("/v1/events", {"actual": {"unit": "GOLD", "amount": 1}}, "actual.unit"),
        ("/v1/events", {"metrics": {"model_version": "m" * 129}}, "metrics.model_version"),
        ("/v1/events", {"ttl_ms": 1000}, "ttl_ms"),
    ],
)
def test_bad_decide_and_event_payloads(
    mk: TenantFactory, path: str, patch: dict[str, object], field: str
) -> None:
    t = mk({"": 1000})
    base: dict[str, object] = {"idempotency_key": key(), "subject": t.subject(), "action": ACTION}
    base["estimate" if path == "/v1/decide" else "actual"] = amount(1)
    r = t.http.post(path, json={**base, **patch})
    assert r.status_code == 400
    assert r.json()["error"] == "INVALID_REQUEST"
    assert r.json()["message"].startswith(field), r.json()["message"]
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}


def test_extend_replay_is_byte_identical_but_for_remaining_ttl(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(10)
    k = key()
    first, again = t.extend(rid, 5000, idempotency_key=k), t.extend(rid, 5000, idempotency_key=k)
    a, b = first.json(), again.json()
    assert b["remaining_ttl_ms"] <= a["remaining_ttl_ms"]
    rewritten = again.content.replace(
        f'"remaining_ttl_ms":{b["remaining_ttl_ms"]}'.encode(),
        f'"remaining_ttl_ms":{a["remaining_ttl_ms"]}'.encode(),
    )
    assert rewritten == first.content
    assert int(t.raw_reservation(rid)["extension_count"]) == 1
