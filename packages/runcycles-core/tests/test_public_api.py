"""The public surface: every name in ``__all__`` exists, and the names users switch to from
the official SDK are importable from the package root."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_lazy_names_match_the_type_checking_imports() -> None:
    """The root loads names on first use: the runtime map and the imports type checkers read
    must list the same names from the same modules, or one of them is lying."""
    tree = ast.parse(Path(rc.__file__).read_text())
    guarded = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.dump(n.test)
    )
    imported = {
        (node.module or "", alias.name)
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    lazy = {(module, name) for module, names in rc._EXPORTS.items() for name in names}
    assert imported == lazy
    assert set(rc.__all__) == {name for _, name in lazy} | {"__version__"}


def test_importing_a_light_module_leaves_the_rest_unloaded() -> None:
    """The server's CLI and workers import only ``runcycles_core.amounts``: that must not
    build the pydantic models or import the HTTP client."""
    code = (
        "import sys, runcycles_core.amounts, runcycles_core as rc\n"
        "print(sorted(m for m in ('runcycles_core.models', 'runcycles_core.client', 'httpx',"
        " 'pydantic') if m in sys.modules))\n"
        "rc.CyclesClient\n"
        "print('runcycles_core.client' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        rc.NoSuchThing  # noqa: B018
    assert "CyclesClient" in dir(rc)
