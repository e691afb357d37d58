"""The README quickstarts run as written: the shell block verbatim in bash (it starts the real
console script in the background on the documented port, with a fresh HOME and so a fresh data
dir, and calls the admin CLI at once), then the Python block against that server."""

from __future__ import annotations

from pathlib import Path

import pytest

from runcycles_testing.readme import quickstart

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "readme",
    [ROOT / "README.md", ROOT / "packages" / "runcycles-core" / "README.md"],
    ids=["root", "core"],
)
def test_decorator_quickstart(tmp_path: Path, readme: Path) -> None:
    with quickstart(readme, tmp_path) as q:
        run = q.run()
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.strip().splitlines()[-1] == "42"
        # The committed actual is on the ledger.
        balances = q.cli("balances", "acme")
        assert balances.returncode == 0, balances.stderr
        assert "1500000" in balances.stdout.replace(",", "").replace("_", "")
