"""ledger.py builds each hot-path script's KEYS/ARGV: its layout must be the one the
script's header documents (reserve.lua reads the scopes from ARGV[18..] and the event
context from the last ARGV; commit.lua reads 5 keys and 10 arguments)."""

from __future__ import annotations

import pytest

from runcycles_server_lite import ledger
from runcycles_server_lite.keys import Keys


def _reserve(scopes: list[str], **kw: object) -> ledger.Reserve:
    base: dict[str, object] = {
        "tenant": "acme",
        "reservation_id": "res_acme_" + "0" * 32,
        "idempotency_key": "k1",
        "payload_hash": "v1:abc",
        "amount": 1000,
        "unit": "TOKENS",
        "scopes": scopes,
        "subject_json": '{"tenant":"acme"}',
        "action_json": '{"kind":"llm"}',
        "metadata_json": "",
        "event_context": '"tenant_id":"acme"',
        "idempotency_ms": 5000,
    }
    base.update(kw)
    return ledger.Reserve(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 3, 6])
def test_reserve_call_matches_the_script_header(n: int) -> None:
    scopes = ["tenant:acme", *[f"tenant:acme/workspace:w{i}" for i in range(1, n)]]
    k = Keys()
    keys, args = ledger.reserve_call(k, _reserve(scopes))
    assert keys[:6] == [
        k.tenant("acme"),
        k.idempotency("acme", "reserve", "k1"),
        k.reservation("acme", "res_acme_" + "0" * 32),
        k.reservation_index("acme"),
        k.reservation_expiry("acme"),
        k.budgets("acme"),
    ]
    assert keys[6:-1] == [k.budget("acme", s, "TOKENS") for s in scopes]
    assert keys[-1] == k.events("acme")
    assert len(args) == 17 + n + 1
    assert args[0] == "live" and args[5] == "1000" and args[6] == "TOKENS"
    assert args[7] == "" and args[9] == ""  # no ttl_ms, no overage policy: tenant defaults
    assert args[16] == str(n) and args[17:-1] == scopes
    assert args[-1] == '"tenant_id":"acme"'


def test_reserve_call_dry_run_and_overrides() -> None:
    _, args = ledger.reserve_call(
        Keys(), _reserve(["tenant:acme"], dry_run=True, ttl_ms=90, overage_policy="REJECT")
    )
    assert (args[0], args[7], args[9]) == ("dry", "90", "REJECT")


def test_commit_call_matches_the_script_header() -> None:
    k = Keys()
    rid = "res_acme_" + "1" * 32
    keys, args = ledger.commit_call(
        k,
        ledger.Commit(
            tenant="acme",
            caller_tenant="acme",
            reservation_id=rid,
            idempotency_key="c1",
            payload_hash="v1:def",
            amount=600,
            unit="TOKENS",
            metrics_json="",
            metadata_json="",
            event_context='"tenant_id":"acme"',
            retention_ms=10,
            idempotency_ms=20,
        ),
    )
    assert keys == [
        k.tenant("acme"),
        k.reservation("acme", rid),
        k.reservation_expiry("acme"),
        k.idempotency("acme", "commit", "c1"),
        k.events("acme"),
    ]
    assert args == [
        "acme",
        "600",
        "TOKENS",
        "c1",
        "v1:def",
        "",
        "",
        "10",
        "20",
        '"tenant_id":"acme"',
    ]
