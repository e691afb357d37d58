"""The error hierarchy: every wire code maps to its class, denials are one family, outages
another, and the two never overlap."""

from __future__ import annotations

import httpx
import pytest

import runcycles_core as rc
from runcycles_core import errors as e

from .conftest import Recorder, error_body, make_config

CODE_TO_CLASS: list[tuple[str, int, type[rc.CyclesProtocolError]]] = [
    ("BUDGET_EXCEEDED", 409, rc.InsufficientBudgetError),
    ("OVERDRAFT_LIMIT_EXCEEDED", 409, rc.OverdraftLimitExceededError),
    ("DEBT_OUTSTANDING", 409, rc.DebtOutstandingError),
    ("BUDGET_FROZEN", 409, rc.BudgetFrozenError),
    ("BUDGET_CLOSED", 409, rc.BudgetClosedError),
    ("TENANT_CLOSED", 409, rc.TenantClosedError),
    ("ACTION_QUOTA_EXCEEDED", 409, rc.ActionDeniedError),
    ("ACTION_KIND_DENIED", 409, rc.ActionDeniedError),
    ("ACTION_KIND_NOT_ALLOWED", 409, rc.ActionDeniedError),
    ("RESERVATION_EXPIRED", 410, rc.ReservationExpiredError),
    ("RESERVATION_FINALIZED", 409, rc.ReservationFinalizedError),
    ("IDEMPOTENCY_MISMATCH", 409, rc.IdempotencyMismatchError),
    ("UNIT_MISMATCH", 400, rc.UnitMismatchError),
    ("MAX_EXTENSIONS_EXCEEDED", 409, rc.MaxExtensionsExceededError),
    ("INVALID_REQUEST", 400, rc.InvalidRequestError),
    ("UNAUTHORIZED", 401, rc.AuthenticationError),
    ("FORBIDDEN", 403, rc.ForbiddenError),
    ("NOT_FOUND", 404, rc.NotFoundError),
]

DENIALS = {
    "BUDGET_EXCEEDED",
    "OVERDRAFT_LIMIT_EXCEEDED",
    "DEBT_OUTSTANDING",
    "BUDGET_FROZEN",
    "BUDGET_CLOSED",
    "TENANT_CLOSED",
    "ACTION_QUOTA_EXCEEDED",
    "ACTION_KIND_DENIED",
    "ACTION_KIND_NOT_ALLOWED",
}


def _reserve_against(recorder: Recorder) -> None:
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        client.create_reservation(
            action={"kind": "llm.completion", "name": "gpt-4o"},
            estimate={"unit": "USD_MICROCENTS", "amount": 100},
        )


@pytest.mark.parametrize(("code", "status", "cls"), CODE_TO_CLASS)
def test_every_code_raises_its_class_with_all_fields(
    recorder: Recorder, code: str, status: int, cls: type[rc.CyclesProtocolError]
) -> None:
    recorder.reply(
        status,
        error_body(code, "the message", details={"scope": "tenant:acme"}),
        headers={"X-Request-Id": "req-header", "X-Cycles-Trace-Id": "cd" * 16},
    )
    with pytest.raises(cls) as info:
        _reserve_against(recorder)
    err = info.value
    assert type(err) is cls
    assert err.status == status
    assert err.error_code == code
    assert err.reason_code == code
    assert err.message == "the message"
    assert err.request_id == "req-1"  # the body's id wins over the header's
    assert err.trace_id == "ab" * 16
    assert err.details == {"scope": "tenant:acme"}
    assert err.scope == "tenant:acme"
    assert isinstance(err, rc.BudgetExceededError) is (code in DENIALS)
    assert err.is_denial is (code in DENIALS)
    assert not isinstance(err, rc.CyclesUnavailableError)
    assert not err.is_retryable()
    assert len(recorder.requests) == 1, "a definite rejection is never retried"
    assert code in str(err)
    assert "req-1" in str(err)


def test_every_spec_error_code_has_a_mapping() -> None:
    mapped = {code for code, _, _ in CODE_TO_CLASS}
    server_side = {"LIMIT_EXCEEDED", "INTERNAL_ERROR"}  # outages, not rejections
    assert {c.value for c in rc.ErrorCode} - {"UNKNOWN"} == (
        mapped - {"ACTION_QUOTA_EXCEEDED", "ACTION_KIND_DENIED", "ACTION_KIND_NOT_ALLOWED"}
    ) | server_side


def test_denial_family_is_catchable_as_budget_exceeded() -> None:
    assert rc.BudgetDeniedError is rc.BudgetExceededError
    for cls in (
        rc.InsufficientBudgetError,
        rc.OverdraftLimitExceededError,
        rc.DebtOutstandingError,
        rc.BudgetFrozenError,
        rc.BudgetClosedError,
        rc.TenantClosedError,
        rc.ActionDeniedError,
    ):
        assert issubclass(cls, rc.BudgetExceededError)
        assert issubclass(cls, rc.CyclesProtocolError)
    for cls in (
        rc.ReservationExpiredError,
        rc.ReservationFinalizedError,
        rc.IdempotencyMismatchError,
        rc.UnitMismatchError,
        rc.NotFoundError,
        rc.AuthenticationError,
    ):
        assert not issubclass(cls, rc.BudgetExceededError)


def test_outages_are_never_denials_nor_protocol_errors() -> None:
    for cls in (
        rc.CyclesUnavailableError,
        rc.CyclesTransportError,
        rc.RateLimitedError,
        rc.InvalidResponseError,
    ):
        assert issubclass(cls, rc.CyclesError)
        assert not issubclass(cls, rc.CyclesProtocolError)
        assert not issubclass(cls, rc.BudgetExceededError)
    err = rc.CyclesUnavailableError("down", attempts=3)
    assert err.is_retryable()
    assert not err.is_denial
    assert err.attempts == 3


def test_plugins_can_subclass_the_denial_base() -> None:
    class FrameworkAbort(Exception):
        pass

    class PluginBudgetExceeded(rc.BudgetExceededError, FrameworkAbort):
        pass

    err = PluginBudgetExceeded("denied", status=409, error_code="DEBT_OUTSTANDING")
    assert isinstance(err, FrameworkAbort)
    assert err.is_debt_outstanding()
    assert err.reason_code == "DEBT_OUTSTANDING"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, rc.InvalidRequestError),
        (401, rc.AuthenticationError),
        (403, rc.ForbiddenError),
        (404, rc.NotFoundError),
        (410, rc.ReservationExpiredError),
        (409, rc.CyclesProtocolError),
        (418, rc.CyclesProtocolError),
    ],
)
def test_unknown_codes_fall_back_to_the_status(
    recorder: Recorder, status: int, cls: type[rc.CyclesProtocolError]
) -> None:
    recorder.reply(status, error_body("SOMETHING_NEW"))
    with pytest.raises(rc.CyclesProtocolError) as info:
        _reserve_against(recorder)
    assert type(info.value) is cls
    assert info.value.error_code == "SOMETHING_NEW"
    assert not info.value.is_denial, "an unknown code is never assumed to be a denial"


def test_non_envelope_error_body_still_maps_by_status(recorder: Recorder) -> None:
    recorder.queue.append(httpx.Response(403, text="<html>forbidden by proxy</html>"))
    with pytest.raises(rc.ForbiddenError) as info:
        _reserve_against(recorder)
    assert info.value.error_code is None
    assert "forbidden by proxy" in info.value.message


def test_unit_mismatch_exposes_its_details(recorder: Recorder) -> None:
    recorder.reply(
        400,
        error_body(
            "UNIT_MISMATCH",
            details={
                "scope": "tenant:acme",
                "requested_unit": "TOKENS",
                "expected_units": ["USD_MICROCENTS"],
            },
        ),
    )
    with pytest.raises(rc.UnitMismatchError) as info:
        _reserve_against(recorder)
    assert info.value.requested_unit == "TOKENS"
    assert info.value.expected_units == ["USD_MICROCENTS"]
    assert info.value.is_unit_mismatch()


def test_error_class_for_prefers_the_code() -> None:
    assert e.error_class_for(400, "BUDGET_EXCEEDED") is rc.InsufficientBudgetError
    assert e.error_class_for(409, None) is rc.CyclesProtocolError
    assert e.error_class_for(410, None) is rc.ReservationExpiredError


def test_retry_after_is_exposed_in_seconds() -> None:
    err = rc.RateLimitedError("slow down", status=429, retry_after_ms=2500)
    assert err.retry_after == 2.5
    assert rc.CyclesProtocolError("x").retry_after is None


def test_non_conformant_envelope_keeps_its_code(recorder: Recorder) -> None:
    # No request_id: not a valid ErrorResponse, but the code is clear.
    recorder.reply(409, {"error": "DEBT_OUTSTANDING", "message": "pay up", "hint": "fund it"})
    with pytest.raises(rc.DebtOutstandingError) as info:
        _reserve_against(recorder)
    assert info.value.message == "pay up"
    assert info.value.request_id is None
