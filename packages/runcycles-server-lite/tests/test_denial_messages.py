"""A BUDGET_EXCEEDED denial's message names the scope, remaining, requested and unit, in
dollars for money; the wire numbers (details) stay integers and the error code is unchanged."""

from __future__ import annotations

from runtime_support import TenantFactory, mk

__all__ = ["mk"]


def test_money_denial_message_says_the_dollars(mk: TenantFactory) -> None:
    t = mk({"": 1_000_000_000, "workspace:prod": 50_000_000})  # $10.00, $0.50
    r = t.reserve(150_000_000, subject=t.subject(workspace="prod"))  # $1.50
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "BUDGET_EXCEEDED"
    scope = f"tenant:{t.name}/workspace:prod"
    assert body["message"] == (
        f"insufficient remaining budget on {scope}: remaining $0.50, requested $1.50 "
        "(unit USD_MICROCENTS)"
    )
    assert body["details"] == {
        "scope": scope,
        "unit": "USD_MICROCENTS",
        "remaining": 50_000_000,
        "requested": 150_000_000,
    }


def test_token_denial_message_says_the_tokens(mk: TenantFactory) -> None:
    t = mk({"": 1_000}, unit="TOKENS")
    r = t.reserve(1_200, unit="TOKENS")
    assert r.status_code == 409, r.text
    assert r.json()["message"] == (
        f"insufficient remaining budget on tenant:{t.name}: remaining 1,000 TOKENS, "
        "requested 1,200 TOKENS (unit TOKENS)"
    )
