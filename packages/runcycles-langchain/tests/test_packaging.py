"""The supported range is declared once and matches the metadata; the public surface is pinned;
the README quickstart runs as written against a real server."""

from __future__ import annotations

from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import runcycles_langchain
from runcycles_langchain import _supported
from runcycles_testing.readme import quickstart, readme_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_declared_range_matches_metadata_and_installed_version() -> None:
    reqs = {Requirement(r).name: Requirement(r) for r in requires("runcycles-langchain") or []}
    core = Requirement(_supported.REQUIREMENT)
    assert reqs[core.name].specifier == core.specifier
    agents = Requirement(_supported.AGENTS_REQUIREMENT)
    assert reqs[agents.name].specifier == agents.specifier
    assert version(_supported.FRAMEWORK) in core.specifier
    assert _supported.OLDEST in core.specifier
    assert version(_supported.AGENTS_FRAMEWORK) in agents.specifier


def test_public_surface() -> None:
    assert sorted(runcycles_langchain.__all__) == [
        "BudgetExceededError",
        "CyclesCallbackHandler",
        "CyclesMiddleware",
        "CyclesSettings",
    ]
    for name in runcycles_langchain.__all__:
        assert getattr(runcycles_langchain, name) is not None
    with pytest.raises(AttributeError):
        _ = runcycles_langchain.NoSuchThing


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks(README)
    assert set(blocks) == {"shell", "python"}, "README lost its quickstart markers"
    assert "CyclesCallbackHandler" in blocks["python"]
    assert len(blocks["python"].strip().splitlines()) <= 7
    with quickstart(README, tmp_path, drop_env=("CYCLES_", "OPENAI_")) as q:
        assert q.run_and_check() == "Hi!"
        # The call was reserved and its estimate committed: nothing left held.
        spent, reserved = q.balance("acme")
        assert spent == 50_000
        assert reserved == 0
