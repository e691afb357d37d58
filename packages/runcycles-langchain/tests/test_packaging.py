"""The supported range is declared once and matches the metadata; the public surface is pinned;
the README quickstart runs as written against a real server."""

from __future__ import annotations

import contextlib
import io
import re
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import runcycles_langchain
from runcycles_langchain import _supported
from runcycles_testing import Bench

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


def test_readme_quickstart_runs_as_written(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    bench.fund({"": 1_000_000_000})
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    quickstart = blocks[0]
    assert "CyclesCallbackHandler" in quickstart
    assert len(quickstart.strip().splitlines()) <= 7
    cfg = bench.config()
    monkeypatch.setenv("CYCLES_BASE_URL", cfg.base_url)
    monkeypatch.setenv("CYCLES_TENANT", bench.tenant)
    monkeypatch.setenv("CYCLES_API_KEY", bench.api_key or "")
    monkeypatch.setenv("CYCLES_JOURNAL_DIR", str(bench.tmp_path / "readme-journal"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(quickstart, str(README), "exec"), {})
    assert out.getvalue().strip() == "Hi!"
    assert bench.spent() == 50_000
