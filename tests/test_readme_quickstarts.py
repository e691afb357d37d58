"""The README quickstarts run as written: the shell block against the real console script
(embedded store, fresh data dir, free port), then the Python block against that server."""

from __future__ import annotations

from pathlib import Path

from runcycles_testing.readme import quickstart

ROOT = Path(__file__).resolve().parents[1]


def test_core_decorator_quickstart(tmp_path: Path) -> None:
    with quickstart(ROOT / "packages" / "runcycles-core" / "README.md", tmp_path) as q:
        run = q.run()
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.strip().splitlines()[-1] == "42"
        # The committed actual is on the ledger.
        balances = q.cli("balances", "acme")
        assert balances.returncode == 0, balances.stderr
        assert "1500000" in balances.stdout.replace(",", "").replace("_", "")
