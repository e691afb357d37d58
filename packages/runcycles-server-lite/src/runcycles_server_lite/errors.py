"""Protocol error codes, their HTTP statuses, and the exception that carries them."""

from __future__ import annotations

from typing import Any

# Runtime ErrorCode enum (cycles-protocol-v0.yaml) plus BUDGET_NOT_FOUND, which only the
# admin plane puts on the wire (the runtime maps a missing budget to NOT_FOUND).
STATUS_BY_CODE: dict[str, int] = {
    "INVALID_REQUEST": 400,
    "UNIT_MISMATCH": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "BUDGET_NOT_FOUND": 404,
    "BUDGET_EXCEEDED": 409,
    "BUDGET_FROZEN": 409,
    "BUDGET_CLOSED": 409,
    "RESERVATION_FINALIZED": 409,
    "IDEMPOTENCY_MISMATCH": 409,
    "OVERDRAFT_LIMIT_EXCEEDED": 409,
    "DEBT_OUTSTANDING": 409,
    "MAX_EXTENSIONS_EXCEEDED": 409,
    "TENANT_CLOSED": 409,
    "DUPLICATE_RESOURCE": 409,
    # Admin-plane (governance) codes.
    "TENANT_NOT_FOUND": 404,
    "WEBHOOK_NOT_FOUND": 404,
    "EVENT_NOT_FOUND": 404,
    "TENANT_SUSPENDED": 409,
    "INSUFFICIENT_PERMISSIONS": 403,
    "KEY_REVOKED": 409,
    "KEY_EXPIRED": 409,
    "RESERVATION_EXPIRED": 410,
    "LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
}


class ProtocolError(Exception):
    """An error answered with the protocol's ErrorResponse body.

    ``status`` defaults to the code's mapped HTTP status; ``details`` is the open object the
    spec allows (e.g. UNIT_MISMATCH carries scope, requested_unit, expected_units).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS_BY_CODE.get(code, 500)
        self.details = details
        self.headers = headers


def invalid(message: str, **details: Any) -> ProtocolError:
    """A 400 INVALID_REQUEST with an optional details object."""
    return ProtocolError("INVALID_REQUEST", message, details=details or None)


def unavailable(message: str = "budget store unavailable") -> ProtocolError:
    """A 503 for a store outage: retryable, and never confused with a denial or bad auth.

    The body keeps INTERNAL_ERROR because the protocol's ErrorCode enum has no outage code.
    """
    return ProtocolError("INTERNAL_ERROR", message, status=503, headers={"Retry-After": "1"})
