"""Parity with the official ``runcycles`` SDK (0.5.x): its public names exist here, and the two
model sets accept each other's wire JSON, so switching is a change of import."""

from __future__ import annotations

from typing import Any

import pytest
import runcycles as official

import runcycles_core as rc

# Official names that belong to the lifecycle layer (decorator, context, streaming) or to its
# never-raising response wrapper, which this client replaces with typed models and exceptions.
NOT_CLIENT_NAMES = {
    "cycles",
    "set_default_client",
    "set_default_config",
    "CyclesContext",
    "get_cycles_context",
    "CyclesResponse",
    "StreamReservation",
    "AsyncStreamReservation",
    "StreamUsage",
    "DryRunResult",
}

SUBJECT = {"tenant": "acme", "app": "support", "dimensions": {"run_id": "r1"}}
ACTION = {"kind": "llm.completion", "name": "openai:gpt-4o", "tags": ["a"]}
AMOUNT = {"unit": "USD_MICROCENTS", "amount": 2**62}

REQUESTS: list[tuple[str, dict[str, Any]]] = [
    (
        "ReservationCreateRequest",
        {
            "idempotency_key": "k1",
            "subject": SUBJECT,
            "action": ACTION,
            "estimate": AMOUNT,
            "ttl_ms": 5_000,
            "grace_period_ms": 0,
            "overage_policy": "ALLOW_WITH_OVERDRAFT",
            "dry_run": True,
            "metadata": {"x": [1, 2]},
        },
    ),
    (
        "CommitRequest",
        {
            "idempotency_key": "k2",
            "actual": AMOUNT,
            "metrics": {"tokens_input": 1, "latency_ms": 2, "custom": {"c": "d"}},
            "metadata": {"m": 1},
        },
    ),
    ("ReleaseRequest", {"idempotency_key": "k3", "reason": "done"}),
    ("ReservationExtendRequest", {"idempotency_key": "k4", "extend_by_ms": 1_000}),
    (
        "DecisionRequest",
        {"idempotency_key": "k5", "subject": SUBJECT, "action": ACTION, "estimate": AMOUNT},
    ),
    (
        "EventCreateRequest",
        {
            "idempotency_key": "k6",
            "subject": SUBJECT,
            "action": ACTION,
            "actual": AMOUNT,
            "overage_policy": "REJECT",
            "client_time_ms": 1,
        },
    ),
]


def test_official_public_names_exist_here() -> None:
    missing = set(official.__all__) - NOT_CLIENT_NAMES - set(rc.__all__)
    assert missing == set()


def test_official_exception_names_keep_their_meaning() -> None:
    assert issubclass(rc.BudgetExceededError, rc.CyclesProtocolError)
    assert issubclass(rc.CyclesProtocolError, rc.CyclesError)
    for name in (
        "OverdraftLimitExceededError",
        "DebtOutstandingError",
        "ReservationExpiredError",
        "ReservationFinalizedError",
        "TenantClosedError",
    ):
        ours = getattr(rc, name)
        assert issubclass(ours, rc.CyclesProtocolError), name
        err = ours("m", status=409, error_code="X", retry_after_ms=5, request_id="r")
        assert (err.status, err.error_code, err.retry_after_ms, err.request_id) == (
            409,
            "X",
            5,
            "r",
        )


@pytest.mark.parametrize(("name", "wire"), REQUESTS, ids=[n for n, _ in REQUESTS])
def test_request_wire_json_is_interchangeable(name: str, wire: dict[str, Any]) -> None:
    ours = getattr(rc, name).model_validate(wire)
    theirs = getattr(official, name).model_validate(wire)
    assert ours.to_wire() == wire
    assert theirs.model_dump(mode="json", exclude_none=True) == wire
    assert getattr(official, name).model_validate(ours.to_wire()) == theirs


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        (
            "ReservationCreateResponse",
            {
                "decision": "ALLOW_WITH_CAPS",
                "reservation_id": "r",
                "affected_scopes": ["tenant:acme"],
                "caps": {"max_tokens": 5, "tool_allowlist": ["search"]},
                "expires_at_ms": 10,
                "remaining_ttl_ms": 5,
            },
        ),
        ("CommitResponse", {"status": "COMMITTED", "charged": AMOUNT, "released": AMOUNT}),
        ("ReleaseResponse", {"status": "RELEASED", "released": AMOUNT}),
        ("ReservationExtendResponse", {"status": "ACTIVE", "expires_at_ms": 99}),
        ("DecisionResponse", {"decision": "DENY", "reason_code": "DEBT_OUTSTANDING"}),
        ("EventCreateResponse", {"status": "APPLIED", "event_id": "e"}),
    ],
)
def test_responses_parse_the_same(name: str, wire: dict[str, Any]) -> None:
    ours = getattr(rc, name).parse_response(wire)
    theirs = getattr(official, name).model_validate(wire)
    assert ours.to_wire() == theirs.model_dump(mode="json", exclude_none=True) == wire


def test_config_fields_are_a_superset() -> None:
    official_fields = set(official.CyclesConfig.__dataclass_fields__)
    ours = set(rc.CyclesConfig.__dataclass_fields__)
    assert official_fields <= ours


def test_official_env_variables_give_the_same_config(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "CYCLES_BASE_URL": "http://localhost:7878",
        "CYCLES_API_KEY": "k",
        "CYCLES_TENANT": "acme",
        "CYCLES_TOOLSET": "web",
        "CYCLES_READ_TIMEOUT": "7",
        "CYCLES_RETRY_ENABLED": "false",
        "CYCLES_RETRY_MAX_ATTEMPTS": "3",
        "CYCLES_RETRY_MAX_DELAY": "4",
        "CYCLES_JOURNAL_DIR": "/tmp/j",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    theirs = official.CyclesConfig.from_env()
    ours = rc.CyclesConfig.from_env()
    for name in official.CyclesConfig.__dataclass_fields__:
        assert getattr(ours, name) == getattr(theirs, name), name
