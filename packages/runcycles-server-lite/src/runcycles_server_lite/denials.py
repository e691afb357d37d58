"""Denial messages that say the amounts: scope, remaining, requested and unit ($ for money).

The Lua scripts return a refusal's numbers as integers in ``details`` (the wire stays
integers); the human ``message`` is written here with the formatter the client shares.
"""

from __future__ import annotations

from typing import Any

from runcycles_core.amounts import describe_denial

__all__ = ["denial_message"]


def denial_message(code: str, message: str, details: dict[str, Any] | None) -> str:
    """``message`` rewritten with the amounts when ``details`` holds them, else unchanged."""
    if not details:
        return message
    scope, unit = details.get("scope"), details.get("unit")
    remaining, requested = details.get("remaining"), details.get("requested")
    if not (isinstance(scope, str) and isinstance(unit, str)):
        return message
    if not (isinstance(remaining, int) and isinstance(requested, int)):
        return message
    return describe_denial(code, scope, remaining, requested, unit)
