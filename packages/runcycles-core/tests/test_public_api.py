"""The public surface: every name in ``__all__`` exists, and the names users switch to from
the official SDK are importable from the package root."""

from __future__ import annotations

import runcycles_core as rc


def test_all_names_resolve() -> None:
    missing = [name for name in rc.__all__ if not hasattr(rc, name)]
    assert missing == []
    assert len(set(rc.__all__)) == len(rc.__all__)


def test_lifecycle_and_official_names_at_the_root() -> None:
    for name in (
        "cycles",
        "CyclesClient",
        "AsyncCyclesClient",
        "CyclesConfig",
        "BudgetExceededError",
        "set_default_client",
        "set_default_config",
        "get_cycles_context",
        "guard",
        "reserve",
        "CyclesSettings",
        "ModelCall",
        "Usage",
        "price",
        "estimate",
        "CommitJournal",
    ):
        assert name in rc.__all__, name
