"""Adapter between the shared client-recovery conformance runner and runcycles-core's tests.

The runner (profile ``cycles-sdk-recovery`` v0.3, "Executable scenario contract") starts one
fresh process per scenario::

    python scripts/run_client_recovery_conformance.py --claim durable \\
        --adapter <venv>/bin/python packages/runcycles-core/tests/recovery_adapter.py

It appends the scenario id to the command and writes only the scenario's inputs (``id``,
``level``, ``name``, ``precondition``, ``faults``) to stdin. This adapter runs the native pytest
tests bound to that id (:data:`SCENARIO_TESTS`, every parametrization of each) in a subprocess
against a real server-lite, and prints exactly one JSON object on stdout::

    {"scenario_id": "CR-CORE-001", "passed": true,
     "native_tests": ["packages/runcycles-core/tests/test_recovery_scenarios.py::test_..."]}

``native_tests`` lists the exact pytest node ids that ran (from pytest's JUnit report), so a
mapping that matches nothing, or a skipped test, cannot pass. On failure ``passed`` is false and
``diagnostic`` says why. Pytest's output and every other diagnostic go to stderr. The interpreter
running the adapter must have runcycles-core and runcycles-server-lite with their ``[test]``
extras installed (``.nox/core/bin/python`` after ``python -m nox -s core``).

Report mode: with ``RUNCYCLES_RECOVERY_JUNIT`` set to one or more JUnit XML reports (joined with
``os.pathsep``) of a pytest run of this checkout's ``tests/test_recovery_scenarios.py``, the
adapter does not run pytest again; it attests the test cases of that run, with the same rules
(every bound function present, nothing failed, errored or skipped). CI can run the suite once with
``--junitxml`` and then the conformance runner in report mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from runcycles_server_lite.testing import run as run_in_group

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_PREFIX = "packages/runcycles-core/"
MODULE = "tests/test_recovery_scenarios.py"
INPUT_FIELDS = frozenset({"id", "level", "name", "precondition", "faults"})
REPORT_ENV = "RUNCYCLES_RECOVERY_JUNIT"
# pytest's JUnit "classname" of the test cases in MODULE.
CLASSNAME = MODULE.removesuffix(".py").replace("/", ".")

# Scenario id -> the test functions in MODULE that assert its choreography and assertions.
SCENARIO_TESTS: dict[str, tuple[str, ...]] = {
    "CR-CORE-001": (
        "test_cr_core_001_lost_commit_response_reuses_key",
        "test_cr_core_001_lost_commit_response_reuses_key_async",
    ),
    "CR-CORE-002": ("test_cr_core_002_expired_commit_falls_back_to_event",),
    "CR-CORE-003": ("test_cr_core_003_heartbeat_transport_failure_is_observable_and_non_fatal",),
    "CR-CORE-004": ("test_cr_core_004_protocol_invalid_success_remains_ambiguous",),
    "CR-DURABLE-001": (
        "test_cr_durable_001_journal_precedes_commit_and_survives_kill",
        "test_cr_durable_001_async_restart_replays_on_first_settlement",
    ),
    "CR-DURABLE-002": ("test_cr_durable_002_replayed_expired_commit_switches_durably_to_event",),
    "CR-DURABLE-003": ("test_cr_durable_003_rate_limit_floor_survives_restart",),
    "CR-DURABLE-004": ("test_cr_durable_004_tenant_journal_survives_api_key_rotation",),
    "CR-DURABLE-005": ("test_cr_durable_005_corrupt_or_unsupported_record_is_quarantined",),
    "CR-DURABLE-006": ("test_cr_durable_006_concurrent_replay_remains_exactly_once",),
    "CR-DURABLE-007": ("test_cr_durable_007_journal_filenames_preserve_distinct_identifiers",),
    "CR-BOUNDARY-001": ("test_cr_boundary_001_missing_actual_is_surfaced_without_settlement",),
}


def _fail(scenario_id: str, why: str, native_tests: list[str] | None = None) -> dict[str, Any]:
    print(f"recovery adapter: {scenario_id}: {why}", file=sys.stderr)
    return {
        "scenario_id": scenario_id,
        "passed": False,
        "native_tests": native_tests or [],
        "diagnostic": why,
    }


def _check_input(scenario_id: str, stdin_text: str) -> str | None:
    """Why the runner's stdin does not describe ``scenario_id`` (None if it does)."""
    try:
        scenario = json.loads(stdin_text)
    except ValueError as exc:
        return f"stdin is not JSON: {exc}"
    if not isinstance(scenario, dict):
        return "stdin is not a JSON object"
    if scenario.get("id") != scenario_id:
        return f"stdin describes {scenario.get('id')!r}, not {scenario_id!r}"
    extra = set(scenario) - INPUT_FIELDS
    if extra:
        return f"stdin carries fields that are not scenario inputs: {sorted(extra)}"
    return None


def _executed(reports: list[Path], functions: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(test name incl. parameters, problem or None) for each reported case of ``functions``."""
    cases = []
    for report in reports:
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "")
            if case.get("classname") != CLASSNAME or name.split("[")[0] not in functions:
                continue
            problem = None
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    problem = f"{tag}: {node.get('message', '')}"[:500]
            cases.append((name, problem))
    return cases


def _run_pytest(functions: tuple[str, ...], junit: Path) -> int:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *(f"{MODULE}::{fn}" for fn in functions),
    ]
    # Its own process group, stopped as a whole when it returns (also on Ctrl-C).
    proc = run_in_group(
        cmd, cwd=PACKAGE_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sys.stderr.write(proc.stdout)
    return proc.returncode


def run(scenario_id: str, stdin_text: str) -> dict[str, Any]:
    """Run (or, in report mode, look up) the native tests of ``scenario_id``; the runner's
    JSON result."""
    wrong = _check_input(scenario_id, stdin_text)
    if wrong:
        return _fail(scenario_id, wrong)
    functions = SCENARIO_TESTS.get(scenario_id)
    if functions is None:
        return _fail(scenario_id, "no native test is bound to this scenario id")
    problems: list[str] = []
    reports_env = os.environ.get(REPORT_ENV)
    if reports_env:
        reports = [Path(p) for p in reports_env.split(os.pathsep) if p]
        absent = [str(p) for p in reports if not p.is_file()]
        if absent:
            return _fail(scenario_id, f"no such JUnit report: {', '.join(absent)}")
        cases = _executed(reports, functions)
    else:
        with tempfile.TemporaryDirectory(prefix="recovery-adapter-") as tmp:
            junit = Path(tmp) / "junit.xml"
            code = _run_pytest(functions, junit)
            cases = _executed([junit], functions) if junit.exists() else []
        if code != 0:
            problems.append(f"pytest exited {code}")
    native = list(dict.fromkeys(f"{REPO_PREFIX}{MODULE}::{name}" for name, _ in cases))
    problems += [f"{name}: {problem}" for name, problem in cases if problem]
    problems += [
        f"{fn} did not run" for fn in functions if not any(n.split("[")[0] == fn for n, _ in cases)
    ]
    if problems:
        return _fail(scenario_id, "; ".join(problems), native)
    return {"scenario_id": scenario_id, "passed": True, "native_tests": native}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: recovery_adapter.py SCENARIO_ID < scenario.json", file=sys.stderr)
        return 2
    result = run(argv[-1], sys.stdin.read())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
