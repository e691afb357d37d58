"""POST /v1/reservations (live and dry run) and POST /v1/decide."""

from __future__ import annotations

import time

import httpx
import pytest
from runtime_support import ACTION, UNIT, TenantFactory, amount, key, mk, short

from runcycles_server_lite.testing import ServerHandle

__all__ = ["mk"]


def test_reserve_locks_every_budgeted_derived_scope(mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:prod": 500, "workspace:prod/agent:bot": 200})
    r = t.reserve(150, subject=t.subject(workspace="Prod", agent="bot", toolset="web"))
    assert r.status_code == 200, r.text
    body = r.json()
    base = f"tenant:{t.name}"
    assert body["decision"] == "ALLOW"
    assert body["reservation_id"].startswith(f"res_{t.name}_")
    assert body["reserved"] == amount(150)
    # Values lowercased; every present level listed, budgeted or not.
    assert body["affected_scopes"] == [
        base,
        f"{base}/workspace:prod",
        f"{base}/workspace:prod/agent:bot",
        f"{base}/workspace:prod/agent:bot/toolset:web",
    ]
    assert body["scope_path"] == f"{base}/workspace:prod/agent:bot/toolset:web"
    assert 59_000 <= body["remaining_ttl_ms"] <= 60_000
    assert [b["scope"] for b in body["balances"]] == body["affected_scopes"][:3]
    assert body["balances"][0]["remaining"] == amount(850)
    assert "caps" not in body
    assert "reason_code" not in body
    assert short(t.ledger(), t.name) == {
        "": (850, 150, 0, 0),
        "workspace:prod": (350, 150, 0, 0),
        "workspace:prod/agent:bot": (50, 150, 0, 0),
    }


def test_only_present_levels_are_used(mk: TenantFactory) -> None:
    t = mk({"": 1000, "agent:bot": 100, "workspace:prod": 10})
    r = t.reserve(50, subject=t.subject(agent="bot"))
    assert r.json()["affected_scopes"] == [f"tenant:{t.name}", f"tenant:{t.name}/agent:bot"]
    # workspace:prod (only 10 left) is not derived from this subject, so it does not refuse.
    assert short(t.ledger(), t.name)["workspace:prod"] == (10, 0, 0, 0)
    assert short(t.ledger(), t.name)["agent:bot"] == (50, 50, 0, 0)


def test_all_or_nothing_when_one_scope_is_short(mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:prod": 100})
    r = t.reserve(101, subject=t.subject(workspace="prod"))
    assert r.status_code == 409
    assert r.json()["error"] == "BUDGET_EXCEEDED"
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0), "workspace:prod": (100, 0, 0, 0)}


def test_no_budget_anywhere_is_404(mk: TenantFactory) -> None:
    t = mk({"workspace:other": 100})
    r = t.reserve(1, subject=t.subject(workspace="prod"))
    assert r.status_code == 404
    assert r.json()["error"] == "NOT_FOUND"
    assert "Budget not found for provided scope" in r.json()["message"]


def test_budget_only_in_another_unit_is_unit_mismatch(mk: TenantFactory) -> None:
    t = mk({"": 100}, unit="TOKENS")
    r = t.reserve(1)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "UNIT_MISMATCH"
    assert body["details"] == {
        "scope": f"tenant:{t.name}",
        "requested_unit": UNIT,
        "expected_units": ["TOKENS"],
    }
    dry = t.reserve(1, dry_run=True)
    assert dry.status_code == 400
    assert dry.json()["error"] == "UNIT_MISMATCH"


@pytest.mark.parametrize(
    ("tenant_fields", "leaf_fields", "code"),
    [
        ({"status": "FROZEN"}, {"status": "CLOSED"}, "BUDGET_FROZEN"),
        ({"status": "CLOSED"}, {}, "BUDGET_CLOSED"),
        (
            {"is_over_limit": "true", "debt": "5", "remaining": "995"},
            {},
            "OVERDRAFT_LIMIT_EXCEEDED",
        ),
        ({"debt": "5", "remaining": "995"}, {"status": "FROZEN"}, "DEBT_OUTSTANDING"),
        ({}, {"is_over_limit": "true"}, "OVERDRAFT_LIMIT_EXCEEDED"),
    ],
)
def test_refusal_order_is_per_scope_tenant_first(
    mk: TenantFactory, tenant_fields: dict[str, str], leaf_fields: dict[str, str], code: str
) -> None:
    t = mk({"": 1000, "workspace:prod": 1000})
    if tenant_fields:
        t.set_budget("", **tenant_fields)
    if leaf_fields:
        t.set_budget("workspace:prod", **leaf_fields)
    before = t.ledger()
    r = t.reserve(10, subject=t.subject(workspace="prod"))
    assert r.status_code == 409
    assert r.json()["error"] == code
    assert t.ledger() == before
    dry = t.reserve(10, subject=t.subject(workspace="prod"), dry_run=True)
    assert dry.status_code == 200
    assert dry.json()["decision"] == "DENY"
    assert dry.json()["reason_code"] == code
    dec = t.decide(10, subject=t.subject(workspace="prod"))
    assert dec.status_code == 200
    assert dec.json()["reason_code"] == code
    assert t.ledger() == before


def test_over_limit_beats_debt_outstanding(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    t.set_budget("", debt="10", remaining="990", is_over_limit="true")
    assert t.reserve(1).json()["error"] == "OVERDRAFT_LIMIT_EXCEEDED"


def test_debt_with_positive_overdraft_limit_does_not_block(mk: TenantFactory) -> None:
    t = mk({"": 1000}, overdraft_limit=100)
    t.set_budget("", debt="10", remaining="990")
    assert t.reserve(100).status_code == 200


def test_replay_returns_the_stored_body_with_fresh_remaining_ttl(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    k = key()
    first = t.reserve(100, idempotency_key=k)
    time.sleep(0.02)
    again = t.reserve(
        100, idempotency_key=k, grace_period_ms=5000
    )  # explicit default: same request
    assert again.status_code == 200
    a, b = first.json(), again.json()
    assert b["remaining_ttl_ms"] < a["remaining_ttl_ms"]
    b["remaining_ttl_ms"] = a["remaining_ttl_ms"]
    assert b == a
    strip = str(a["remaining_ttl_ms"])
    assert (
        again.content.replace(
            f'"remaining_ttl_ms":{again.json()["remaining_ttl_ms"]}'.encode(),
            f'"remaining_ttl_ms":{strip}'.encode(),
        )
        == first.content
    )
    assert short(t.ledger(), t.name) == {"": (900, 100, 0, 0)}
    # Once finalized, a replay reports no time left.
    assert t.release(a["reservation_id"]).status_code == 200
    assert t.reserve(100, idempotency_key=k).json()["remaining_ttl_ms"] == 0


def test_same_key_different_payload_is_mismatch(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    k = key()
    assert t.reserve(100, idempotency_key=k).status_code == 200
    r = t.reserve(101, idempotency_key=k)
    assert r.status_code == 409
    assert r.json()["error"] == "IDEMPOTENCY_MISMATCH"
    # dry_run and live share one namespace: flipping dry_run is a different request.
    r = t.reserve(100, idempotency_key=k, dry_run=True)
    assert r.json()["error"] == "IDEMPOTENCY_MISMATCH"
    assert short(t.ledger(), t.name) == {"": (900, 100, 0, 0)}


def test_idempotency_keys_are_per_tenant(mk: TenantFactory) -> None:
    a, b = mk({"": 1000}), mk({"": 1000})
    k = key()
    ra = a.reserve(100, idempotency_key=k)
    rb = b.reserve(100, idempotency_key=k)
    assert rb.status_code == 200
    assert ra.json()["reservation_id"] != rb.json()["reservation_id"]


def test_header_key_must_equal_body_key(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    body = {
        "idempotency_key": "a",
        "subject": t.subject(),
        "action": ACTION,
        "estimate": amount(1),
    }
    r = t.http.post("/v1/reservations", json=body, headers={"X-Idempotency-Key": "b"})
    assert r.status_code == 400
    assert r.json()["error"] == "INVALID_REQUEST"
    r = t.http.post("/v1/reservations", json=body, headers={"X-Idempotency-Key": "a"})
    assert r.status_code == 200


def test_dry_run_evaluates_without_mutating(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    k = key()
    r = t.reserve(100, dry_run=True, idempotency_key=k)
    assert r.status_code == 200
    body = r.json()
    assert body["decision"] == "ALLOW"
    assert body["affected_scopes"] == [f"tenant:{t.name}"]
    for absent in ("reservation_id", "expires_at_ms", "remaining_ttl_ms", "reason_code"):
        assert absent not in body
    assert body["balances"][0]["remaining"] == amount(1000)
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}
    assert t.http.get("/v1/reservations").json()["reservations"] == []
    replay = t.reserve(100, dry_run=True, idempotency_key=k)
    assert replay.content == r.content
    deny = t.reserve(5000, dry_run=True)
    assert deny.json()["decision"] == "DENY"
    assert deny.json()["reason_code"] == "BUDGET_EXCEEDED"
    missing = t.reserve(1, dry_run=True, subject={"workspace": "nowhere"})
    assert missing.json()["reason_code"] == "BUDGET_NOT_FOUND"


def test_caps_on_the_leaf_budget_give_allow_with_caps(mk: TenantFactory) -> None:
    t = mk({"": 1000, "agent:bot": 100})
    t.set_budget("agent:bot", caps_json='{"max_tokens":256}')
    r = t.reserve(10, subject=t.subject(agent="bot"))
    assert r.json()["decision"] == "ALLOW_WITH_CAPS"
    assert r.json()["caps"] == {"max_tokens": 256}
    assert t.decide(10, subject=t.subject(agent="bot")).json()["caps"] == {"max_tokens": 256}
    assert "caps" not in t.reserve(10).json()


def test_ttl_defaults_and_tenant_cap(mk: TenantFactory) -> None:
    t = mk({"": 1000}, default_reservation_ttl_ms=20_000, max_reservation_ttl_ms=30_000)
    assert 19_000 <= t.reserve(1).json()["remaining_ttl_ms"] <= 20_000
    capped = t.reserve(1, ttl_ms=86_400_000).json()
    assert 29_000 <= capped["remaining_ttl_ms"] <= 30_000
    rec = t.raw_reservation(capped["reservation_id"])
    assert int(rec["expires_at"]) - int(rec["created_at"]) == 30_000


def test_tenant_closed_refuses_live_and_denies_dry_run(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    k = key()
    assert t.reserve(10, idempotency_key=k).status_code == 200
    t.set_tenant(status="CLOSED")
    # A replay of a success from before the close still replays.
    assert t.reserve(10, idempotency_key=k).status_code == 200
    r = t.reserve(10)
    assert r.status_code == 409
    assert r.json()["error"] == "TENANT_CLOSED"
    dry = t.reserve(10, dry_run=True)
    assert dry.json()["decision"] == "DENY"
    assert dry.json()["reason_code"] == "TENANT_CLOSED"
    assert t.decide(10).json()["reason_code"] == "TENANT_CLOSED"
    # Reads keep working.
    assert t.http.get("/v1/reservations").status_code == 200
    t.set_tenant(status="WEIRD")
    assert t.reserve(10).status_code == 500
    assert t.reserve(10, dry_run=True).status_code == 500


def test_subject_tenant_must_be_the_keys_tenant(mk: TenantFactory) -> None:
    a, b = mk({"": 1000}), mk({"": 1000})
    for call in (
        lambda: a.reserve(1, subject={"tenant": b.name}),
        lambda: a.reserve(1, subject={"tenant": b.name}, dry_run=True),
        lambda: a.decide(1, subject={"tenant": b.name}),
        lambda: a.event(1, subject={"tenant": b.name}),
    ):
        r = call()
        assert r.status_code == 403
        assert r.json()["error"] == "FORBIDDEN"
    assert short(b.ledger(), b.name) == {"": (1000, 0, 0, 0)}


def test_authentication_and_permissions(server: ServerHandle, mk: TenantFactory) -> None:
    t = mk({"": 1000}, permissions=["reservations:list"])
    body = {"idempotency_key": "x", "subject": t.subject(), "action": ACTION, "estimate": amount(1)}
    with httpx.Client(base_url=server.base_url) as anon:
        assert anon.post("/v1/reservations", json=body).status_code == 401
        bad = anon.post(
            "/v1/reservations", json=body, headers={"X-Cycles-API-Key": "cyc_live_nope"}
        )
        assert bad.status_code == 401
        assert bad.json()["error"] == "UNAUTHORIZED"
    r = t.http.post("/v1/reservations", json=body)
    assert r.status_code == 403
    assert "reservations:create" in r.json()["message"]
    assert t.http.post("/v1/decide", json=body).status_code == 403


BAD_BODIES = [
    ({"estimate": {"unit": UNIT, "amount": -1}}, "estimate.amount"),
    ({"estimate": {"unit": UNIT, "amount": 2**63}}, "estimate.amount"),
    ({"estimate": {"unit": UNIT, "amount": 1.0}}, "estimate.amount"),
    ({"estimate": {"unit": UNIT, "amount": "1"}}, "estimate.amount"),
    ({"estimate": {"unit": UNIT, "amount": True}}, "estimate.amount"),
    ({"estimate": {"unit": "EUR", "amount": 1}}, "estimate.unit"),
    ({"subject": {"dimensions": {"a": "b"}}}, "subject"),
    ({"subject": {"tenant": "x/y"}}, "subject.tenant"),
    ({"subject": {"workspace": "w" * 129}}, "subject.workspace"),
    (
        {"subject": {"workspace": "w", "dimensions": {str(i): "v" for i in range(17)}}},
        "subject.dimensions",
    ),
    ({"action": {"kind": "k" * 65, "name": "n"}}, "action.kind"),
    ({"action": {"kind": "k", "name": "n", "tags": ["t"] * 11}}, "action.tags"),
    ({"ttl_ms": 999}, "ttl_ms"),
    ({"ttl_ms": 86_400_001}, "ttl_ms"),
    ({"grace_period_ms": 60_001}, "grace_period_ms"),
    ({"overage_policy": "SOMETIMES"}, "overage_policy"),
    ({"dry_run": "yes"}, "dry_run"),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"idempotency_key": "k" * 257}, "idempotency_key"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("patch", "field"), BAD_BODIES)
def test_bad_payloads_are_400_naming_the_field(
    mk: TenantFactory, patch: dict[str, object], field: str
) -> None:
    t = mk({"": 1000})
    body = {
        "idempotency_key": key(),
        "subject": t.subject(),
        "action": ACTION,
        "estimate": amount(1),
    }
    body.update(patch)
    r = t.http.post("/v1/reservations", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "INVALID_REQUEST"
    assert r.json()["message"].startswith(field), r.json()["message"]
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}


def test_malformed_json_and_non_object_bodies(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    malformed = t.http.post(
        "/v1/reservations", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert t.http.post("/v1/reservations", json=[1]).status_code == 400
    r = t.http.post("/v1/reservations", json={"subject": t.subject()})
    assert r.status_code == 400
    assert "field required" in r.json()["message"]


def test_decide_replays_and_mismatches(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    k = key()
    first = t.decide(100, idempotency_key=k)
    assert first.json() == {"decision": "ALLOW", "affected_scopes": [f"tenant:{t.name}"]}
    assert t.decide(100, idempotency_key=k).content == first.content
    assert t.decide(101, idempotency_key=k).json()["error"] == "IDEMPOTENCY_MISMATCH"
    assert t.decide(1, subject={"workspace": "nowhere"}).json()["reason_code"] == "BUDGET_NOT_FOUND"
    mismatch = t.decide(1, unit="TOKENS")
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "UNIT_MISMATCH"
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}
