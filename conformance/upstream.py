"""Where the upstream Cycles Protocol files are: ``CYCLES_SPEC_DIR``, by default
``../shared/spec`` next to the repository root. Only this conformance suite reads them."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ENV = "CYCLES_SPEC_DIR"
REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "spec"
RUNTIME_SPEC = "cycles-protocol-v0.yaml"
ADMIN_SPEC = "cycles-governance-admin-v0.1.25.yaml"
RECOVERY_CATALOG = "client-recovery/scenarios.yaml"
RECOVERY_RUNNER = "scripts/run_client_recovery_conformance.py"
NEEDED = (RUNTIME_SPEC, ADMIN_SPEC, RECOVERY_CATALOG, RECOVERY_RUNNER)


def spec_dir() -> Path:
    """The spec folder; a clear error naming ``CYCLES_SPEC_DIR`` if it is not there."""
    raw = os.environ.get(ENV)
    folder = Path(raw).expanduser() if raw else DEFAULT
    folder = folder if folder.is_absolute() else (REPO / folder)
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if missing:
        origin = f"{ENV}={raw}" if raw else f"{ENV} is unset, so the default {DEFAULT}"
        raise FileNotFoundError(
            f"The conformance suite needs the upstream Cycles Protocol spec folder ({origin}); "
            f"missing there: {', '.join(missing)}. Set {ENV} to a checkout of the "
            "cycles-protocol repository (the folder holding cycles-protocol-v0.yaml)."
        )
    return folder.resolve()


def spec_file(name: str) -> Path:
    return spec_dir() / name


@cache
def load(name: str) -> dict[str, Any]:
    """A YAML file of the spec folder, parsed."""
    data: dict[str, Any] = yaml.safe_load(spec_file(name).read_text(encoding="utf-8"))
    return data


# Upstream operations server-lite does not implement, by spec file and operationId, with why.
# This is the one list the whole suite excludes by: remove an id when its route lands and the
# parity test and schemathesis cover it from then on (the parity test fails while an
# implemented operation is still listed here).
_EVIDENCE = "signed evidence is not served (no evidence signer in server-lite)"
NOT_IMPLEMENTED: dict[str, dict[str, str]] = {
    RUNTIME_SPEC: {
        "getEvidence": _EVIDENCE,
        "getEvidenceJwks": _EVIDENCE,
    },
    ADMIN_SPEC: {
        # Same method and path as the runtime spec's getBalances, which is what /v1/balances
        # serves (checked under cycles-protocol-v0.yaml); one path cannot answer both shapes.
        "getBalances": "GET /v1/balances serves the runtime plane's getBalances",
    },
}
