"""A denial's text names the scope, remaining, requested and unit (dollars for money), from a
real server-lite and from a server that reports only the scope; the amount helpers round-trip."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

import runcycles_core as rc
from runcycles_core.amounts import describe_denial, format_amount, parse_amount

from .conftest import Recorder, error_body, make_config

ACTION = rc.Action(kind="llm.completion", name="openai:gpt-4o")


def _config(server: Any, budgets: dict[str, int], unit: str = "USD_MICROCENTS") -> rc.CyclesConfig:
    tenant = "t" + secrets.token_hex(5)
    key = server.provision(tenant, budgets, unit=unit)
    return rc.CyclesConfig(base_url=server.base_url, api_key=key, tenant=tenant)


def test_money_denial_from_server_lite_says_dollars(server: Any) -> None:
    config = _config(server, {"": 50_000_000})  # $0.50
    with rc.CyclesClient(config) as client, pytest.raises(rc.InsufficientBudgetError) as info:
        client.create_reservation(action=ACTION, estimate=rc.Amount.usd_microcents(150_000_000))
    err = info.value
    assert (err.remaining, err.requested, err.unit) == (50_000_000, 150_000_000, "USD_MICROCENTS")
    expected = (
        f"insufficient remaining budget on tenant:{config.tenant}: remaining $0.50, "
        "requested $1.50 (unit USD_MICROCENTS)"
    )
    assert str(err).startswith(expected + " error_code=BUDGET_EXCEEDED status=409")
    assert err.message == expected  # the server's own message says the same
    assert err.error_code == "BUDGET_EXCEEDED"


async def test_token_denial_from_server_lite_says_tokens(server: Any) -> None:
    config = _config(server, {"": 1_000}, unit="TOKENS")
    async with rc.AsyncCyclesClient(config) as client:
        with pytest.raises(rc.BudgetExceededError) as info:
            await client.create_reservation(
                action=ACTION, estimate=rc.Amount(unit=rc.Unit.TOKENS, amount=1_200)
            )
    assert "remaining 1,000 TOKENS, requested 1,200 TOKENS (unit TOKENS)" in str(info.value)


def test_denial_from_a_terse_server_uses_the_request_amount(recorder: Recorder) -> None:
    recorder.reply(
        409, error_body("BUDGET_EXCEEDED", "Insufficient budget", details={"scope": "tenant:acme"})
    )
    client = rc.CyclesClient(make_config(), transport=recorder.sync_transport())
    with client, pytest.raises(rc.InsufficientBudgetError) as info:
        client.create_reservation(action=ACTION, estimate=rc.Amount.usd_microcents(250_000))
    text = str(info.value)
    assert text.startswith(
        "insufficient remaining budget on tenant:acme: remaining not reported, requested $0.0025 "
        "(unit USD_MICROCENTS); server: Insufficient budget error_code=BUDGET_EXCEEDED"
    )


@pytest.mark.parametrize(
    ("amount", "unit", "text"),
    [
        (150_000_000, "USD_MICROCENTS", "$1.50"),
        (250_000, rc.Unit.USD_MICROCENTS, "$0.0025"),
        (1, "USD_MICROCENTS", "$0.00000001"),
        (-50_000_000, "USD_MICROCENTS", "-$0.50"),
        (123_456_000_000, "USD_MICROCENTS", "$1,234.56"),
        (1_200, "TOKENS", "1,200 TOKENS"),
        (7, rc.Unit.CREDITS, "7 CREDITS"),
    ],
)
def test_format_and_parse_round_trip(amount: int, unit: Any, text: str) -> None:
    assert format_amount(amount, unit) == text
    assert parse_amount(text, unit) == amount


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1.50", 150_000_000),
        ("1.50 USD", 150_000_000),
        ("usd 2", 200_000_000),
        ("150000000", 150_000_000),
        ("150_000_000", 150_000_000),
        ("1,200", 1_200),
    ],
)
def test_parse_money_forms(text: str, expected: int) -> None:
    assert parse_amount(text, "USD_MICROCENTS") == expected


@pytest.mark.parametrize(
    ("text", "unit", "match"),
    [
        ("$1.50", "TOKENS", "in dollars, but the unit is TOKENS"),
        ("0.000000001 USD", "USD_MICROCENTS", "finer than one micro-cent"),
        ("12 TOKENS", "USD_MICROCENTS", "is in TOKENS"),
        ("1.5", "TOKENS", "not an amount"),
        ("lots", "USD_MICROCENTS", r"dollars like \$1.50"),
    ],
)
def test_parse_rejects_what_it_cannot_read_exactly(text: str, unit: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_amount(text, unit)


def test_describe_denial_without_amounts() -> None:
    assert describe_denial("BUDGET_FROZEN", "tenant:a", None, None, None) == (
        "budget is frozen on tenant:a"
    )
    assert describe_denial("ACTION_KIND_DENIED", None, None, 5, "TOKENS") == (
        "action kind denied: remaining not reported, requested 5 TOKENS (unit TOKENS)"
    )


def test_unknown_server_code_is_untouched(recorder: Recorder) -> None:
    recorder.reply(409, error_body("SOMETHING_NEW", "odd"))
    client = rc.CyclesClient(make_config(), transport=recorder.sync_transport())
    with client, pytest.raises(rc.CyclesProtocolError) as info:
        client.create_reservation(action=ACTION, estimate=rc.Amount.usd_microcents(1))
    assert not isinstance(info.value, rc.BudgetExceededError)
    assert str(info.value).startswith("odd error_code=SOMETHING_NEW")
