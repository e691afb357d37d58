"""Soft-landing helpers follow the protocol's caps precedence."""

from __future__ import annotations

from runcycles_core import Caps, clamp_max_tokens, filter_tools, tool_allowed


def test_clamp_max_tokens() -> None:
    assert clamp_max_tokens(1_000, None) == 1_000
    assert clamp_max_tokens(1_000, Caps(max_tokens=256)) == 256
    assert clamp_max_tokens(100, Caps(max_tokens=256)) == 100
    assert clamp_max_tokens(None, Caps(max_tokens=256)) == 256
    assert clamp_max_tokens(None, Caps()) is None


def test_allowlist_wins_over_denylist() -> None:
    caps = Caps(tool_allowlist=["search"], tool_denylist=["search", "shell"])
    assert tool_allowed("search", caps)
    assert not tool_allowed("shell", caps)
    assert not tool_allowed("calculator", caps)


def test_denylist_blocks_exactly_and_case_sensitively() -> None:
    caps = Caps(tool_denylist=["shell"])
    assert not tool_allowed("shell", caps)
    assert tool_allowed("Shell", caps)
    assert tool_allowed("search", caps)
    assert tool_allowed("anything", None)
    assert tool_allowed("anything", Caps(tool_allowlist=[], tool_denylist=[]))


def test_filter_tools_keeps_order_and_uses_the_name_getter() -> None:
    tools = [{"name": "a"}, {"name": "b"}, {"name": "c"}]
    kept = filter_tools(tools, Caps(tool_denylist=["b"]), name=lambda t: t["name"])
    assert kept == [{"name": "a"}, {"name": "c"}]
    assert filter_tools(["x", "y"], Caps(tool_allowlist=["y"])) == ["y"]
