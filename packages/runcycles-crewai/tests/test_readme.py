"""The README quickstart runs as written: its shell block against the real server-lite console
script (embedded store, fresh data dir, free port), then its Python block against that server."""

from __future__ import annotations

from pathlib import Path

from runcycles_testing.readme import quickstart, readme_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks(README)
    assert set(blocks) == {"shell", "python"}, "README lost its quickstart markers"
    # A stand-in LLM is part of the block: CrewAI ships no offline model.
    assert len([ln for ln in blocks["python"].splitlines() if ln.strip()]) <= 7
    with quickstart(README, tmp_path, drop_env=("CYCLES_", "OPENAI_")) as q:
        assert q.run_and_check() == "42"
        # The call was reserved and committed: spent > 0, nothing left held.
        spent, reserved = q.balance("acme")
        assert spent > 0
        assert reserved == 0
