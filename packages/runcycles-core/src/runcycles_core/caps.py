"""Soft-landing helpers: apply the server's ``caps`` (ALLOW_WITH_CAPS) to a call.

The protocol's precedence: a non-empty ``tool_allowlist`` allows only those tools (the denylist
is then ignored); otherwise a non-empty ``tool_denylist`` blocks exactly those. Tool names match
``Action.name`` exactly and case-sensitively.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from .models import Caps

__all__ = ["clamp_max_tokens", "filter_tools", "tool_allowed"]

T = TypeVar("T")


def clamp_max_tokens(requested: int | None, caps: Caps | None) -> int | None:
    """``requested`` lowered to ``caps.max_tokens``; the cap itself if nothing was requested."""
    if caps is None or caps.max_tokens is None:
        return requested
    if requested is None:
        return caps.max_tokens
    return min(requested, caps.max_tokens)


def tool_allowed(name: str, caps: Caps | None) -> bool:
    """Whether ``caps`` allow the tool called ``name``."""
    if caps is None:
        return True
    if caps.tool_allowlist:
        return name in caps.tool_allowlist
    if caps.tool_denylist:
        return name not in caps.tool_denylist
    return True


def filter_tools(tools: Iterable[T], caps: Caps | None, name: Callable[[T], str] = str) -> list[T]:
    """The tools ``caps`` allow, in their original order; ``name`` extracts a tool's name."""
    return [t for t in tools if tool_allowed(name(t), caps)]
