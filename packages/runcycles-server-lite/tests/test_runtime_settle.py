"""Commit, release, extend and GET of a reservation."""

from __future__ import annotations

import time

import httpx
import pytest
from runtime_support import UNIT, TenantFactory, amount, assert_identity, key, mk, short

from runcycles_server_lite.testing import ServerHandle

__all__ = ["mk"]


def test_commit_below_estimate_returns_the_rest(mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:w": 500})
    rid = t.reserve_ok(300, subject=t.subject(workspace="w"))
    r = t.commit(rid, 120)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "COMMITTED"
    assert body["charged"] == amount(120)
    assert body["released"] == amount(180)
    assert [b["scope"] for b in body["balances"]] == [
        f"tenant:{t.name}",
        f"tenant:{t.name}/workspace:w",
    ]
    assert short(t.ledger(), t.name) == {"": (880, 0, 120, 0), "workspace:w": (380, 0, 120, 0)}


def test_commit_exactly_the_estimate_has_no_released(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    body = t.commit(t.reserve_ok(300), 300).json()
    assert body["charged"] == amount(300)
    assert "released" not in body


def test_overage_reject_refuses_and_keeps_the_reservation(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100, overage_policy="REJECT")
    r = t.commit(rid, 101)
    assert r.status_code == 409
    assert r.json()["error"] == "BUDGET_EXCEEDED"
    assert short(t.ledger(), t.name) == {"": (900, 100, 0, 0)}
    assert t.commit(rid, 100).status_code == 200


def test_overage_allow_if_available_charges_in_full_when_covered(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    body = t.commit(t.reserve_ok(100), 150).json()
    assert body["charged"] == amount(150)
    assert short(t.ledger(), t.name) == {"": (850, 0, 150, 0)}
    assert t.ledger()[f"tenant:{t.name}|{UNIT}"]["is_over_limit"] == "false"


def test_overage_allow_if_available_caps_and_flags_only_short_scopes(mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:w": 130})
    rid = t.reserve_ok(100, subject=t.subject(workspace="w"))
    body = t.commit(rid, 200).json()
    # The delta of 100 is capped to the 30 the workspace still has.
    assert body["charged"] == amount(130)
    assert "released" not in body
    led = t.ledger()
    assert short(led, t.name) == {"": (870, 0, 130, 0), "workspace:w": (0, 0, 130, 0)}
    assert led[f"tenant:{t.name}|{UNIT}"]["is_over_limit"] == "false"
    assert led[f"tenant:{t.name}/workspace:w|{UNIT}"]["is_over_limit"] == "true"
    # The flag is sticky: the workspace refuses new reservations until an operator acts.
    assert (
        t.reserve(1, subject=t.subject(workspace="w")).json()["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    )
    assert t.reserve(1).status_code == 200


def test_overage_with_overdraft_books_debt(mk: TenantFactory) -> None:
    t = mk({"": 100}, overdraft_limit=50)
    rid = t.reserve_ok(80, overage_policy="ALLOW_WITH_OVERDRAFT")
    body = t.commit(rid, 140).json()
    assert body["charged"] == amount(140)
    led = t.ledger()
    assert short(led, t.name) == {"": (-40, 0, 100, 40)}
    assert led[f"tenant:{t.name}|{UNIT}"]["is_over_limit"] == "false"
    assert_identity(led)
    # Debt within a positive limit does not block; remaining does.
    assert t.reserve(1).json()["error"] == "BUDGET_EXCEEDED"


def test_overage_with_overdraft_beyond_limit_is_refused(mk: TenantFactory) -> None:
    t = mk({"": 100}, overdraft_limit=50)
    rid = t.reserve_ok(80, overage_policy="ALLOW_WITH_OVERDRAFT")
    r = t.commit(rid, 151)
    assert r.status_code == 409
    assert r.json()["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    assert short(t.ledger(), t.name) == {"": (20, 80, 0, 0)}
    assert t.commit(rid, 150).status_code == 200
    assert short(t.ledger(), t.name) == {"": (-50, 0, 100, 50)}


def test_overdraft_with_zero_limit_behaves_as_allow_if_available(mk: TenantFactory) -> None:
    t = mk({"": 100})
    rid = t.reserve_ok(80, overage_policy="ALLOW_WITH_OVERDRAFT")
    body = t.commit(rid, 200).json()
    assert body["charged"] == amount(100)
    assert short(t.ledger(), t.name) == {"": (0, 0, 100, 0)}
    assert t.ledger()[f"tenant:{t.name}|{UNIT}"]["is_over_limit"] == "true"


def test_policy_defaults_to_the_tenants(mk: TenantFactory) -> None:
    t = mk({"": 1000}, default_commit_overage_policy="REJECT")
    rid = t.reserve_ok(100)
    assert t.commit(rid, 101).json()["error"] == "BUDGET_EXCEEDED"
    rid2 = t.reserve_ok(100, overage_policy="ALLOW_IF_AVAILABLE")
    assert t.commit(rid2, 101).status_code == 200


def test_commit_replay_mismatch_and_finalized(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100)
    k = key()
    first = t.commit(rid, 60, idempotency_key=k)
    again = t.commit(rid, 60, idempotency_key=k)
    assert again.status_code == 200
    assert again.content == first.content
    assert short(t.ledger(), t.name) == {"": (940, 0, 60, 0)}
    assert t.commit(rid, 61, idempotency_key=k).json()["error"] == "IDEMPOTENCY_MISMATCH"
    other = t.commit(rid, 60)
    assert other.status_code == 409
    assert other.json()["error"] == "RESERVATION_FINALIZED"
    assert t.release(rid).json()["error"] == "RESERVATION_FINALIZED"
    assert t.extend(rid, 1000).json()["error"] == "RESERVATION_FINALIZED"


def test_commit_unit_mismatch(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100)
    r = t.commit(rid, 10, unit="TOKENS")
    assert r.status_code == 400
    assert r.json()["error"] == "UNIT_MISMATCH"
    assert short(t.ledger(), t.name) == {"": (900, 100, 0, 0)}


def test_release_returns_the_hold_and_replays(mk: TenantFactory) -> None:
    t = mk({"": 1000, "app:a": 300})
    rid = t.reserve_ok(200, subject=t.subject(app="a"))
    k = key()
    r = t.release(rid, idempotency_key=k, reason="not needed")
    assert r.status_code == 200
    assert r.json()["status"] == "RELEASED"
    assert r.json()["released"] == amount(200)
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0), "app:a": (300, 0, 0, 0)}
    assert t.release(rid, idempotency_key=k, reason="not needed").content == r.content
    assert (
        t.release(rid, idempotency_key=k, reason="other").json()["error"] == "IDEMPOTENCY_MISMATCH"
    )
    assert t.commit(rid, 1).json()["error"] == "RESERVATION_FINALIZED"
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0), "app:a": (300, 0, 0, 0)}


def test_unknown_reservations_are_404(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    for rid in (f"res_{t.name}_{'0' * 32}", "rsv_foreign_format", "x" * 128):
        assert t.commit(rid, 1).status_code == 404
        assert t.release(rid).status_code == 404
        assert t.extend(rid, 1000).status_code == 404
        assert t.http.get(f"/v1/reservations/{rid}").status_code == 404
    assert t.http.get(f"/v1/reservations/{'x' * 129}").status_code == 400


def test_another_tenants_reservation_is_403_everywhere(mk: TenantFactory) -> None:
    a, b = mk({"": 1000}), mk({"": 1000})
    rid = a.reserve_ok(100)
    for r in (
        b.commit(rid, 1),
        b.release(rid),
        b.extend(rid, 1000),
        b.http.get(f"/v1/reservations/{rid}"),
    ):
        assert r.status_code == 403
        assert r.json()["error"] == "FORBIDDEN"
    assert rid not in {
        x["reservation_id"] for x in b.http.get("/v1/reservations").json()["reservations"]
    }
    assert b.http.get("/v1/reservations", params={"tenant": a.name}).status_code == 403
    assert short(a.ledger(), a.name) == {"": (900, 100, 0, 0)}


def test_extend_moves_expiry_from_the_current_expiry(mk: TenantFactory) -> None:
    t = mk({"": 1000}, max_reservation_extensions=2)
    r = t.reserve(10, ttl_ms=5000)
    rid, exp = r.json()["reservation_id"], r.json()["expires_at_ms"]
    k = key()
    e1 = t.extend(rid, 10_000, idempotency_key=k)
    assert e1.status_code == 200
    assert e1.json()["status"] == "ACTIVE"
    assert e1.json()["expires_at_ms"] == exp + 10_000
    assert 14_000 < e1.json()["remaining_ttl_ms"] <= 15_000
    replay = t.extend(rid, 10_000, idempotency_key=k)
    assert replay.json()["expires_at_ms"] == exp + 10_000
    assert t.extend(rid, 9_000, idempotency_key=k).json()["error"] == "IDEMPOTENCY_MISMATCH"
    assert t.extend(rid, 1000).json()["expires_at_ms"] == exp + 11_000
    over = t.extend(rid, 1000)
    assert over.status_code == 409
    assert over.json()["error"] == "MAX_EXTENSIONS_EXCEEDED"
    detail = t.http.get(f"/v1/reservations/{rid}").json()
    assert detail["expires_at_ms"] == exp + 11_000
    assert short(t.ledger(), t.name) == {"": (990, 10, 0, 0)}
    t.release(rid)
    assert t.extend(rid, 10_000, idempotency_key=k).json()["remaining_ttl_ms"] == 0


def test_deadlines_extend_has_no_grace_commit_and_release_do(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    a = t.reserve_ok(10, ttl_ms=1000, grace_period_ms=3000)
    b = t.reserve_ok(10, ttl_ms=1000, grace_period_ms=3000)
    c = t.reserve_ok(10, ttl_ms=1000, grace_period_ms=0)
    time.sleep(1.1)
    late = t.extend(a, 1000)
    assert late.status_code == 410
    assert late.json()["error"] == "RESERVATION_EXPIRED"
    assert t.commit(a, 5).status_code == 200
    assert t.release(b).status_code == 200
    for r in (t.commit(c, 5), t.release(c)):
        assert r.status_code == 410
        assert r.json()["error"] == "RESERVATION_EXPIRED"
    # c's hold is returned by the sweeper whenever it gets to it, never by commit or release.
    assert short(t.ledger(), t.name)[""] in ((985, 10, 5, 0), (995, 0, 5, 0))


def test_get_reservation_detail(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    k = key()
    subject = {**t.subject(workspace="W"), "dimensions": {"cost_center": "42"}}
    rid = t.reserve_ok(100, subject=subject, idempotency_key=k, metadata={"run": 7})
    d = t.http.get(f"/v1/reservations/{rid}").json()
    assert d["status"] == "ACTIVE"
    assert d["idempotency_key"] == k
    assert d["subject"] == subject
    assert d["action"]["kind"] == "llm.completion"
    assert d["reserved"] == amount(100)
    assert d["metadata"] == {"run": 7}
    assert d["expires_at_ms"] > d["created_at_ms"]
    assert "finalized_at_ms" not in d
    assert "committed" not in d
    t.commit(rid, 40, metadata={"note": "done"})
    d = t.http.get(f"/v1/reservations/{rid}").json()
    assert d["status"] == "COMMITTED"
    assert d["committed"] == amount(40)
    assert d["committed_metadata"] == {"note": "done"}
    assert d["finalized_at_ms"] >= d["created_at_ms"]


def test_admin_may_get_and_release_on_behalf_of_a_tenant(
    server: ServerHandle, mk: TenantFactory
) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100)
    with httpx.Client(base_url=server.base_url, headers=server.admin_headers) as admin:
        assert admin.get(f"/v1/reservations/{rid}").json()["status"] == "ACTIVE"
        r = admin.post(
            f"/v1/reservations/{rid}/release",
            json={"idempotency_key": key(), "reason": "[INCIDENT_FORCE_RELEASE]"},
        )
        assert r.status_code == 200
        assert admin.get("/v1/reservations").status_code == 400
        rows = admin.get("/v1/reservations", params={"tenant": t.name}).json()["reservations"]
        assert [x["status"] for x in rows] == ["RELEASED"]
        # Admin is not accepted for commit.
        assert (
            admin.post(
                f"/v1/reservations/{rid}/commit",
                json={"idempotency_key": key(), "actual": amount(1)},
            ).status_code
            == 401
        )
        wrong = admin.get(f"/v1/reservations/{rid}", headers={"X-Admin-API-Key": "wrong"})
        assert wrong.status_code == 401
    assert t.raw_reservation(rid)["released_by"] == "admin_on_behalf_of"
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}

    async def audit(store):  # type: ignore[no-untyped-def]
        return await store.redis.zrange(store.keys.audit(t.name), 0, -1)

    entries = server.run_store(audit)
    assert len(entries) == 1
    assert "admin_on_behalf_of" in entries[0]


def test_tenant_closed_guard_on_settlement(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    done, active = t.reserve_ok(10), t.reserve_ok(10)
    k = key()
    first = t.commit(done, 5, idempotency_key=k)
    t.set_tenant(status="CLOSED")
    assert t.commit(done, 5, idempotency_key=k).content == first.content
    for r in (t.commit(active, 5), t.release(active), t.extend(active, 1000), t.event(1)):
        assert r.status_code == 409
        assert r.json()["error"] == "TENANT_CLOSED"
    assert t.http.get(f"/v1/reservations/{active}").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("commit", {"actual": {"unit": UNIT, "amount": -5}}, "actual.amount"),
        (
            "commit",
            {"actual": {"unit": UNIT, "amount": 1}, "metrics": {"latency_ms": -1}},
            "metrics.latency_ms",
        ),
        ("commit", {"actual": {"unit": UNIT, "amount": 1}, "extra": 1}, "extra"),
        ("release", {"reason": "r" * 257}, "reason"),
        ("extend", {"extend_by_ms": 0}, "extend_by_ms"),
        ("extend", {"extend_by_ms": 86_400_001}, "extend_by_ms"),
        ("extend", {"extend_by_ms": 10.5}, "extend_by_ms"),
    ],
)
def test_bad_settlement_payloads(
    mk: TenantFactory, path: str, body: dict[str, object], field: str
) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(100)
    r = t.http.post(f"/v1/reservations/{rid}/{path}", json={"idempotency_key": key(), **body})
    assert r.status_code == 400
    assert r.json()["message"].startswith(field), r.json()["message"]
    assert short(t.ledger(), t.name) == {"": (900, 100, 0, 0)}
    assert t.raw_reservation(rid)["status"] == "ACTIVE"


def test_commit_and_release_keys_are_unique_per_tenant_and_endpoint(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    a, b = t.reserve_ok(100), t.reserve_ok(100)
    k = key()
    assert t.commit(a, 10, idempotency_key=k).status_code == 200
    reused = t.commit(b, 10, idempotency_key=k)
    assert reused.status_code == 409
    assert reused.json()["error"] == "IDEMPOTENCY_MISMATCH"
    c, d = t.reserve_ok(100), t.reserve_ok(100)
    k2 = key()
    assert t.release(c, idempotency_key=k2).status_code == 200
    assert t.release(d, idempotency_key=k2).json()["error"] == "IDEMPOTENCY_MISMATCH"
    # The same key may still be used once on each endpoint.
    assert t.release(b, idempotency_key=k).status_code == 200
    assert short(t.ledger(), t.name) == {"": (890, 100, 10, 0)}


INT64_MAX = 2**63 - 1


def test_amounts_near_int64_max_stay_exact(mk: TenantFactory) -> None:
    t = mk({"": INT64_MAX, "workspace:w": INT64_MAX})
    est = INT64_MAX - 807
    r = t.reserve(est, subject=t.subject(workspace="w"))
    assert r.status_code == 200, r.text
    assert r.json()["balances"][0]["remaining"] == amount(807)
    body = t.commit(r.json()["reservation_id"], est + 1).json()
    assert body["charged"] == amount(est + 1)
    assert body["balances"][1]["spent"] == amount(est + 1)
    assert body["balances"][1]["remaining"] == amount(806)
    assert short(t.ledger(), t.name)["workspace:w"] == (806, 0, est + 1, 0)
    capped = t.event(INT64_MAX, subject=t.subject(workspace="w")).json()
    assert capped["charged"] == amount(806)
    assert_identity(t.ledger())


def test_a_ledger_overflow_is_refused_before_any_write(mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:w": 1000})
    rid = t.reserve_ok(10, subject=t.subject(workspace="w"))
    # Corrupt the second ledger so returning the hold would overflow int64.
    t.set_budget("workspace:w", remaining=str(INT64_MAX), allocated=str(INT64_MAX))
    before = t.ledger()
    for r in (t.release(rid), t.commit(rid, 5)):
        assert r.status_code == 500
        assert "out of range" in r.json()["message"]
    assert t.ledger() == before
    assert t.raw_reservation(rid)["status"] == "ACTIVE"


def test_admin_list_validates_the_tenant(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.base_url, headers=server.admin_headers) as admin:
        r = admin.get("/v1/reservations", params={"tenant": "Not/A}Tenant"})
        assert r.status_code == 400
        assert admin.get("/v1/reservations", params={"tenant": "nobody-here"}).json() == {
            "reservations": [],
            "has_more": False,
        }
