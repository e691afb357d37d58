"""The supported range is declared once and matches the metadata; the public surface is pinned;
the README quickstart runs as written against a real server."""

from __future__ import annotations

from importlib.metadata import requires, version
from pathlib import Path

import runcycles_pydantic_ai
from packaging.requirements import Requirement
from runcycles_pydantic_ai import _supported

from runcycles_testing.readme import quickstart, readme_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_declared_range_matches_metadata_and_installed_version() -> None:
    reqs = {Requirement(r).name: Requirement(r) for r in requires("runcycles-pydantic-ai") or []}
    declared = Requirement(_supported.REQUIREMENT)
    assert reqs[declared.name].specifier == declared.specifier
    assert version(_supported.FRAMEWORK) in declared.specifier
    assert _supported.OLDEST in declared.specifier


def test_public_surface() -> None:
    assert sorted(runcycles_pydantic_ai.__all__) == [
        "BudgetExceededError",
        "CyclesCapability",
        "CyclesSettings",
        "cycles_metadata",
    ]
    for name in runcycles_pydantic_ai.__all__:
        assert getattr(runcycles_pydantic_ai, name) is not None


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks(README)
    assert set(blocks) == {"shell", "python"}, "README lost its quickstart markers"
    assert "CyclesCapability" in blocks["python"]
    assert len(blocks["python"].strip().splitlines()) <= 6
    with quickstart(README, tmp_path, drop_env=("CYCLES_", "OPENAI_")) as q:
        assert q.run_and_check() == "42"
        # The request was reserved and committed: spent > 0, nothing left held.
        spent, reserved = q.balance("acme")
        assert spent > 0
        assert reserved == 0
