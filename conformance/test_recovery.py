"""The client-recovery profile: core's catalog copy is the upstream catalog, and the protocol's
own runner passes every durable-claim scenario through core's adapter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from upstream import RECOVERY_CATALOG, RECOVERY_RUNNER, REPO, load, spec_file

CORE_TESTS = REPO / "packages" / "runcycles-core" / "tests"
sys.path.insert(0, str(CORE_TESTS.parent))
from tests.test_recovery_scenarios import CATALOG, CATALOG_PROFILE  # noqa: E402

ADAPTER = CORE_TESTS / "recovery_adapter.py"
DURABLE_CLAIM = 12  # core + durable + boundary scenarios of profile v0.3


def test_core_catalog_is_the_upstream_catalog() -> None:
    upstream = load(RECOVERY_CATALOG)
    assert (upstream["profile"], str(upstream["version"])) == CATALOG_PROFILE
    assert [dict(s) for s in CATALOG] == upstream["scenarios"]


def test_runner_passes_every_durable_scenario(tmp_path: Path) -> None:
    report = tmp_path / "recovery-report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(spec_file(RECOVERY_RUNNER)),
            "--claim",
            "durable",
            "--timeout",
            "600",
            "--report-json",
            str(report),
            "--adapter",
            sys.executable,
            str(ADAPTER),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert f"Passed {DURABLE_CLAIM} durable recovery scenarios." in proc.stdout
    assert proc.stdout.count("PASS CR-") == DURABLE_CLAIM
