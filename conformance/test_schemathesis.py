"""schemathesis against a live server-lite over both upstream specs: for every operation we
implement, no 5xx, every response matches the spec's schema for its status, and no status the
spec does not document. Bounded: a fixed number of examples per operation, derandomized."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from upstream import ADMIN_SPEC, NOT_IMPLEMENTED, RUNTIME_SPEC, load

from runcycles_server_lite.admin.models import Permission
from runcycles_server_lite.testing import ServerHandle, running_server

MAX_EXAMPLES = 12
SEED = 20261202
TENANT = "acme-corp"
STANDARD_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
CHARSET = re.compile(r"^[a-zA-Z0-9_.-]+$")
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                # Keys come from the fixture below, never generated.
                "with-security-parameters": False,
                "database": "none",
            },
            # Examples, the coverage phase (boundary and invalid values: deterministic and
            # finite) and MAX_EXAMPLES fuzzed cases per operation; no stateful sequences.
            "phases": {"stateful": {"enabled": False}},
        }
    )


def _schema(name: str) -> Any:
    doc = load(name)
    schema = schemathesis.openapi.from_dict(doc, config=_config())
    skipped = sorted(NOT_IMPLEMENTED.get(name, {}))
    return schema.exclude(operation_id=skipped) if skipped else schema


runtime_schema = _schema(RUNTIME_SPEC)
admin_schema = _schema(ADMIN_SPEC)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, str]]:
    """A server with one tenant (the specs' example tenant) holding every permission and a
    budget per unit, so generated requests reach the ledger, not only the gates."""
    with running_server(tmp_path_factory.mktemp("schemathesis")) as srv:
        permissions = list(Permission.__args__)
        secret = srv.provision(TENANT, {"": 10**12}, permissions=permissions)
        for unit in ("TOKENS", "CREDITS", "RISK_POINTS"):
            srv.provision(TENANT, {"": 10**9}, unit=unit)
        yield srv, secret


def _headers(case: Any, server: ServerHandle, secret: str) -> dict[str, str]:
    """The key the operation asks for first (its own security, else the document's)."""
    security = case.operation.definition.raw.get("security")
    if security is None:
        security = case.operation.schema.raw_schema.get("security") or []
    first = next(iter(security[0]), None) if security else None
    if first == "AdminKeyAuth":
        return dict(server.admin_headers)
    if first == "ApiKeyAuth":
        return {"X-Cycles-API-Key": secret}
    return {}


SEEN: dict[str, Counter[int]] = defaultdict(Counter)


def _aim_at_our_tenant(case: Any) -> None:
    """Generated subjects name random tenants, which stop at the 403 gate, and random
    characters, which the spec lets a server reject (400); put the budgeted tenant in and keep
    the generated levels that match the spec's charset, so cases also reach the ledger."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("subject"), dict):
        subject = body["subject"]
        kept = {
            k: v
            for k, v in subject.items()
            if k not in STANDARD_LEVELS or (isinstance(v, str) and CHARSET.match(v))
        }
        body["subject"] = {**kept, "tenant": TENANT}


def _run(case: Any, live: tuple[ServerHandle, str]) -> None:
    server, secret = live
    _aim_at_our_tenant(case)
    response = case.call_and_validate(
        base_url=server.base_url, headers=_headers(case, server, secret), checks=CHECKS
    )
    SEEN[case.operation.label].update([response.status_code])


@runtime_schema.parametrize()
def test_runtime_plane(case: Any, live: tuple[ServerHandle, str]) -> None:
    _run(case, live)


@admin_schema.parametrize()
def test_admin_plane(case: Any, live: tuple[ServerHandle, str]) -> None:
    _run(case, live)


def test_every_implemented_operation_was_exercised() -> None:
    """Runs after the two above: each implemented operation got requests, and the run as a
    whole reached success paths (not only the 4xx gates)."""
    expected = {
        op.label
        for schema in (runtime_schema, admin_schema)
        for op in (result.ok() for result in schema.get_all_operations())
    }
    if not SEEN:
        pytest.skip("the schemathesis tests did not run in this session (deselected)")
    assert set(SEEN) == expected
    total = Counter[int]()
    for counts in SEEN.values():
        total.update(counts)
    print(f"\nschemathesis: {sum(total.values())} requests over {len(SEEN)} operations")
    for label, counts in sorted(SEEN.items()):
        print(f"  {label}: {dict(sorted(counts.items()))}")
    assert sum(n for status, n in total.items() if status < 300) > 0
