"""The supported range is declared once and matches the metadata; the public surface is pinned;
the README quickstart runs as written against a real server."""

from __future__ import annotations

from importlib.metadata import requires, version
from pathlib import Path

import runcycles_autogen
from packaging.requirements import Requirement
from runcycles_autogen import _supported

from runcycles_testing.readme import quickstart, readme_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_declared_range_matches_metadata_and_installed_version() -> None:
    reqs = {
        Requirement(r).name: Requirement(r)
        for r in requires("runcycles-autogen") or []
        if "extra ==" not in r
    }
    for declared in map(Requirement, (_supported.REQUIREMENT, _supported.CORE_REQUIREMENT)):
        assert reqs[declared.name].specifier == declared.specifier
        assert version(declared.name) in declared.specifier
        assert _supported.OLDEST in declared.specifier


def test_public_surface() -> None:
    assert sorted(runcycles_autogen.__all__) == [
        "BudgetExceededError",
        "CyclesChatCompletionClient",
        "CyclesRun",
        "CyclesSettings",
        "CyclesWorkbench",
        "__version__",
        "current_run",
        "cycles_run",
        "run_team",
        "run_team_stream",
        "selector_group_chat",
        "unwrap_team_error",
    ]
    for name in runcycles_autogen.__all__:
        assert getattr(runcycles_autogen, name) is not None


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks(README)
    assert set(blocks) == {"shell", "python"}, "README lost its quickstart markers"
    assert "CyclesChatCompletionClient" in blocks["python"]
    assert len([ln for ln in blocks["python"].splitlines() if ln.strip()]) <= 8
    with quickstart(README, tmp_path, drop_env=("CYCLES_", "OPENAI_")) as q:
        assert q.run_and_check() == "42"
        # The call was reserved and committed: spent > 0, nothing left held.
        spent, reserved = q.balance("acme")
        assert spent > 0
        assert reserved == 0
