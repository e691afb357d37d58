"""The client-recovery profile: core's catalog copy is the upstream catalog, and the protocol's
own runner passes every durable-claim scenario through core's adapter (in report mode, over
one fresh run of the bound tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from upstream import RECOVERY_CATALOG, RECOVERY_RUNNER, REPO, load, spec_file

CORE_TESTS = REPO / "packages" / "runcycles-core" / "tests"
sys.path.insert(0, str(CORE_TESTS.parent))
from tests.recovery_adapter import MODULE, REPORT_ENV, SCENARIO_TESTS  # noqa: E402
from tests.test_recovery_scenarios import (  # noqa: E402
    CATALOG,
    CATALOG_PROFILE,
    EXECUTED_BY_ADAPTER,
)

ADAPTER = CORE_TESTS / "recovery_adapter.py"
DURABLE_CLAIM = 12  # core + durable + boundary scenarios of profile v0.3
# The bound tests in three pytest processes side by side (they mostly wait on leases,
# Retry-After and child processes), split into similar running times: the first two lean on
# child processes.
GROUPS = (
    ("CR-DURABLE-006", "CR-CORE-004"),
    ("CR-DURABLE-001", "CR-DURABLE-004", "CR-DURABLE-007", "CR-BOUNDARY-001", "CR-CORE-001"),
    ("CR-DURABLE-003", "CR-DURABLE-002", "CR-CORE-002", "CR-CORE-003", EXECUTED_BY_ADAPTER),
)


def test_core_catalog_is_the_upstream_catalog() -> None:
    upstream = load(RECOVERY_CATALOG)
    assert (upstream["profile"], str(upstream["version"])) == CATALOG_PROFILE
    assert [dict(s) for s in CATALOG] == upstream["scenarios"]


def _run_bound_tests(tmp_path: Path) -> str:
    """Every scenario's native tests, once, with JUnit reports for the adapter's report mode
    (the mode its docstring gives CI: attest the cases of that run instead of re-running)."""

    def group(i: int) -> str:
        junit = tmp_path / f"junit-{i}.xml"
        nodes = [f"{MODULE}::{fn}" for sid in GROUPS[i] for fn in SCENARIO_TESTS[sid]]
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
        ]
        proc = subprocess.run(
            [*cmd, *nodes], cwd=CORE_TESTS.parent, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stdout[-5000:]
        return str(junit)

    assert sorted(sid for g in GROUPS for sid in g) == sorted(SCENARIO_TESTS)
    with ThreadPoolExecutor(max_workers=len(GROUPS)) as pool:
        return os.pathsep.join(pool.map(group, range(len(GROUPS))))


def test_runner_passes_every_durable_scenario(tmp_path: Path) -> None:
    report = tmp_path / "recovery-report.json"
    env = {**os.environ, REPORT_ENV: _run_bound_tests(tmp_path)}
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
        env=env,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert f"Passed {DURABLE_CLAIM} durable recovery scenarios." in proc.stdout
    assert proc.stdout.count("PASS CR-") == DURABLE_CLAIM
    verdict = json.loads(report.read_text())
    assert verdict["summary"] == {"total": DURABLE_CLAIM, "passed": DURABLE_CLAIM, "failed": 0}
    assert verdict["claim"] == "durable"
