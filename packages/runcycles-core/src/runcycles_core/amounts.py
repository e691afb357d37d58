"""Amounts for people: format wire integers as ``$1.50`` / ``1,200 TOKENS``, parse them back.

The wire always carries integers in a unit (``USD_MICROCENTS``: 1 USD = 100_000_000, so one
micro-cent is $0.00000001; ``TOKENS``, ``CREDITS``, ``RISK_POINTS``: plain counts). These helpers
are for messages, CLIs and logs only; nothing here changes what is sent. Stdlib only, so the
server and the CLIs share them with the client.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from enum import Enum

__all__ = ["MICROCENTS_PER_USD", "MONEY_UNIT", "describe_denial", "format_amount", "parse_amount"]

MONEY_UNIT = "USD_MICROCENTS"
MICROCENTS_PER_USD = 100_000_000

# "$1.50", "-$1.50", "$ 1,234.5", "1.50 USD", "USD 1.50", "1.50$"
_DOLLARS = re.compile(
    r"^(?P<sign>[-+]?)\s*(?:\$\s*(?P<a>[\d,_.]+)|(?P<b>[\d,_.]+)\s*(?:\$|USD)|USD\s*(?P<c>[\d,_.]+))$",
    re.IGNORECASE,
)
# "150000000", "1,200", "1_200", "1200 TOKENS"
_INTEGER = re.compile(r"^(?P<n>[-+]?\s*\d[\d,_]*)(?:\s+(?P<unit>[A-Za-z_]+))?$")
_GROUPED = re.compile(r"^\d{1,3}(?:[,_]\d{3})*$|^\d+$")


def _unit_name(unit: str | Enum) -> str:
    value = unit.value if isinstance(unit, Enum) else unit
    return str(value).upper()


def format_amount(amount: int, unit: str | Enum) -> str:
    """A wire amount for people: ``format_amount(150_000_000, "USD_MICROCENTS") == "$1.50"``,
    ``format_amount(1200, "TOKENS") == "1,200 TOKENS"``.

    Dollars keep two decimals and as many more (up to eight, one micro-cent) as the amount
    needs, so a sub-cent amount never shows as ``$0.00``: ``250_000`` is ``$0.0025``.
    """
    name = _unit_name(unit)
    if name != MONEY_UNIT:
        return f"{amount:,} {name}"
    sign = "-" if amount < 0 else ""
    dollars, rest = divmod(abs(amount), MICROCENTS_PER_USD)
    fraction = f"{rest:08d}".rstrip("0").ljust(2, "0")
    return f"{sign}${dollars:,}.{fraction}"


def parse_amount(text: str, unit: str | Enum) -> int:
    """An amount a person typed, as the integer the wire carries in ``unit``.

    Accepts a plain integer in the unit (``"150000000"``, ``"1,200"``, ``"1_200"``,
    ``"1200 TOKENS"``) and, for ``USD_MICROCENTS``, dollars (``"$1.50"``, ``"1.50 USD"``,
    ``"USD 1.50"``). Raises :class:`ValueError` for anything else: dollars for a non-money
    unit, a unit suffix that is not ``unit``, or dollars finer than one micro-cent.
    """
    name = _unit_name(unit)
    raw = text.strip()
    money = _DOLLARS.match(raw)
    if money:
        if name != MONEY_UNIT:
            raise ValueError(f"{text!r} is in dollars, but the unit is {name}")
        digits = (money["a"] or money["b"] or money["c"]).replace(",", "").replace("_", "")
        try:
            value = Decimal(digits) * MICROCENTS_PER_USD
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a dollar amount") from None
        if value != value.to_integral_value():
            raise ValueError(f"{text!r} is finer than one micro-cent ($0.00000001)")
        return -int(value) if money["sign"] == "-" else int(value)
    plain = _INTEGER.match(raw)
    if plain:
        suffix = plain["unit"]
        if suffix is not None and suffix.upper() != name:
            raise ValueError(f"{text!r} is in {suffix.upper()}, but the unit is {name}")
        number = plain["n"].replace(" ", "")
        sign, body = (number[0], number[1:]) if number[0] in "+-" else ("", number)
        if _GROUPED.match(body):
            value_int = int(body.replace(",", "").replace("_", ""))
            return -value_int if sign == "-" else value_int
    hint = " or dollars like $1.50 / 1.50 USD" if name == MONEY_UNIT else ""
    raise ValueError(f"{text!r} is not an amount: give an integer in {name}{hint}")


_REASONS = {
    "BUDGET_EXCEEDED": "insufficient remaining budget",
    "BUDGET_FROZEN": "budget is frozen",
    "BUDGET_CLOSED": "budget is closed",
    "OVERDRAFT_LIMIT_EXCEEDED": "budget is over its overdraft limit",
    "DEBT_OUTSTANDING": "budget has outstanding debt",
}


def describe_denial(
    code: str | None,
    scope: str | None,
    remaining: int | None,
    requested: int | None,
    unit: str | Enum | None,
) -> str:
    """One line a person can act on: why, where, and the amounts in the unit's own terms.

    ``describe_denial("BUDGET_EXCEEDED", "tenant:acme", 50_000_000, 150_000_000,
    "USD_MICROCENTS")`` is ``"insufficient remaining budget on tenant:acme: remaining $0.50,
    requested $1.50 (unit USD_MICROCENTS)"``. Unknown parts are left out or said to be unknown.
    """
    text = _REASONS.get(code or "", (code or "denied").lower().replace("_", " "))
    if scope:
        text += f" on {scope}"
    if unit is None:
        return text
    name = _unit_name(unit)
    left = "not reported" if remaining is None else format_amount(remaining, name)
    amounts = [f"remaining {left}"]
    if requested is not None:
        amounts.append(f"requested {format_amount(requested, name)}")
    return f"{text}: {', '.join(amounts)} (unit {name})"
