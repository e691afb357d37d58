"""Exceptions raised by the runcycles clients.

Two families that never overlap, so a caller can always tell *denied* from *down*:

``CyclesProtocolError``
    The server answered with a definite rejection (an ``ErrorResponse`` with a 4xx status).
    Retrying the same request will get the same answer.

    ``BudgetExceededError`` is the base of every **explicit denial**: budget exceeded,
    overdraft limit exceeded, debt outstanding, budget frozen or closed, tenant closed, and the
    v0.1.26 action-policy denials. ``except BudgetExceededError`` therefore catches every
    "the budget authority said no"; framework plugins subclass it so a denial also satisfies
    the framework's own abort contract. ``BudgetDeniedError`` is the same class under a name
    that reads better when catching the whole family. The plain ``BUDGET_EXCEEDED`` code
    (remaining < estimate) raises :class:`InsufficientBudgetError`, a ``BudgetExceededError``.

``CyclesUnavailableError``
    The outcome is unknown or the server is not usable: transport failures
    (:class:`CyclesTransportError`), 5xx and 429 (:class:`RateLimitedError`) still failing after
    the configured retries, or a 2xx whose body is not schema-valid
    (:class:`InvalidResponseError`). It is never a denial. Mutations carry an idempotency key,
    so repeating the same request later is safe.

Reason codes and error codes are open strings: a code this client does not know still
produces a :class:`CyclesProtocolError` (picked by HTTP status) carrying the raw code.
"""

from __future__ import annotations

from typing import Any

from .amounts import describe_denial

__all__ = [
    "ActionDeniedError",
    "AuthenticationError",
    "BudgetClosedError",
    "BudgetDeniedError",
    "BudgetExceededError",
    "BudgetFrozenError",
    "CyclesError",
    "CyclesProtocolError",
    "CyclesTransportError",
    "CyclesUnavailableError",
    "DebtOutstandingError",
    "ForbiddenError",
    "IdempotencyMismatchError",
    "InsufficientBudgetError",
    "InvalidRequestError",
    "InvalidResponseError",
    "MaxExtensionsExceededError",
    "NotFoundError",
    "OverdraftLimitExceededError",
    "RateLimitedError",
    "ReservationExpiredError",
    "ReservationFinalizedError",
    "TenantClosedError",
    "UnauthorizedError",
    "UnitMismatchError",
    "error_class_for",
]


class CyclesError(Exception):
    """Base class of every exception this package raises on purpose."""


class _ErrorFields:
    """Attributes shared by server-answered errors and outages."""

    status: int
    error_code: str | None
    message: str
    reason_code: str | None
    details: dict[str, Any] | None
    request_id: str | None
    trace_id: str | None
    retry_after_ms: int | None

    def _set_fields(
        self,
        message: str,
        status: int,
        error_code: str | None,
        reason_code: str | None,
        retry_after_ms: int | None,
        request_id: str | None,
        trace_id: str | None,
        details: dict[str, Any] | None,
    ) -> None:
        self.message = message
        self.status = status
        self.error_code = error_code
        self.reason_code = reason_code if reason_code is not None else error_code
        self.retry_after_ms = retry_after_ms
        self.request_id = request_id
        self.trace_id = trace_id
        self.details = details

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait (``Retry-After`` or ``retry_after_ms``)."""
        return None if self.retry_after_ms is None else self.retry_after_ms / 1000.0

    def _describe(self, lead: str | None = None) -> str:
        parts = [self.message if lead is None else lead]
        if self.error_code:
            parts.append(f"error_code={self.error_code}")
        if self.status:
            parts.append(f"status={self.status}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.trace_id:
            parts.append(f"trace_id={self.trace_id}")
        return " ".join(parts)


class CyclesProtocolError(_ErrorFields, CyclesError):
    """The server rejected the request with a protocol ``ErrorResponse``.

    Attributes: ``status`` (HTTP status), ``error_code`` (the wire ``error``, an open string),
    ``message``, ``reason_code`` (defaults to ``error_code``), ``details`` (the open details
    object, e.g. ``scope`` / ``requested_unit`` / ``expected_units`` on UNIT_MISMATCH),
    ``request_id``, ``trace_id`` and ``retry_after_ms`` / ``retry_after``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        error_code: str | None = None,
        reason_code: str | None = None,
        retry_after_ms: int | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self._set_fields(
            message, status, error_code, reason_code, retry_after_ms, request_id, trace_id, details
        )

    def __str__(self) -> str:
        return self._describe()

    @property
    def is_denial(self) -> bool:
        """True for an explicit budget/policy denial (see :class:`BudgetExceededError`)."""
        return isinstance(self, BudgetExceededError)

    @property
    def scope(self) -> str | None:
        """The scope the server named in ``details`` (e.g. the one lacking budget), if any."""
        value = (self.details or {}).get("scope")
        return value if isinstance(value, str) else None

    # Predicates with the official SDK's names, for code written against it.
    def is_budget_exceeded(self) -> bool:
        return self.error_code == "BUDGET_EXCEEDED"

    def is_overdraft_limit_exceeded(self) -> bool:
        return self.error_code == "OVERDRAFT_LIMIT_EXCEEDED"

    def is_debt_outstanding(self) -> bool:
        return self.error_code == "DEBT_OUTSTANDING"

    def is_tenant_closed(self) -> bool:
        return self.error_code == "TENANT_CLOSED"

    def is_reservation_expired(self) -> bool:
        return self.error_code == "RESERVATION_EXPIRED" or self.status == 410

    def is_reservation_finalized(self) -> bool:
        return self.error_code == "RESERVATION_FINALIZED"

    def is_idempotency_mismatch(self) -> bool:
        return self.error_code == "IDEMPOTENCY_MISMATCH"

    def is_unit_mismatch(self) -> bool:
        return self.error_code == "UNIT_MISMATCH"

    def is_retryable(self) -> bool:
        """A definite rejection is never worth repeating unchanged."""
        return False


class BudgetExceededError(CyclesProtocolError):
    """An explicit denial by the budget authority; base of every denial subclass.

    Catch this to stop on any "no": insufficient budget, overdraft limit, outstanding debt,
    frozen or closed budget, closed tenant, action-policy denial. Plugins subclass it.

    ``str(err)`` says what a person needs: the reason, the ``scope``, the ``remaining`` and
    ``requested`` amounts and their ``unit`` (dollars for ``USD_MICROCENTS``), e.g.
    ``insufficient remaining budget on tenant:acme: remaining $0.50, requested $1.50 (unit
    USD_MICROCENTS)``. The amounts come from the server's ``details`` when it sends them (as
    server-lite does), else ``requested`` / ``unit`` from the request this client sent;
    ``message`` keeps the server's own text.
    """

    # What the request asked for, filled in by the client (a server need not echo it).
    request_amount: int | None = None
    request_unit: str | None = None

    def _detail(self, name: str) -> object:
        return (self.details or {}).get(name)

    @property
    def remaining(self) -> int | None:
        """The refusing scope's remaining amount, if the server reported it."""
        value = self._detail("remaining")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def requested(self) -> int | None:
        """The amount the denied request asked for (in :attr:`unit`)."""
        value = self._detail("requested")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return self.request_amount

    @property
    def unit(self) -> str | None:
        """The unit of :attr:`remaining` and :attr:`requested`."""
        value = self._detail("unit")
        return value if isinstance(value, str) else self.request_unit

    def summary(self) -> str:
        """The denial in one line with the amounts (see the class docstring)."""
        return describe_denial(
            self.error_code, self.scope, self.remaining, self.requested, self.unit
        )

    def __str__(self) -> str:
        if self.unit is None:
            return self._describe()
        summary = self.summary()
        if self.message and self.message != summary:
            summary = f"{summary}; server: {self.message}"
        return self._describe(summary)


BudgetDeniedError = BudgetExceededError
"""The denial base under a family name; the same class as :class:`BudgetExceededError`."""


class InsufficientBudgetError(BudgetExceededError):
    """``BUDGET_EXCEEDED``: remaining budget is below the request on some affected scope."""


class OverdraftLimitExceededError(BudgetExceededError):
    """``OVERDRAFT_LIMIT_EXCEEDED``: a scope is over its overdraft limit."""


class DebtOutstandingError(BudgetExceededError):
    """``DEBT_OUTSTANDING``: unpaid debt blocks new reservations."""


class BudgetFrozenError(BudgetExceededError):
    """``BUDGET_FROZEN``: an affected budget is frozen by an operator."""


class BudgetClosedError(BudgetExceededError):
    """``BUDGET_CLOSED``: an affected budget is closed."""


class TenantClosedError(BudgetExceededError):
    """``TENANT_CLOSED``: the owning tenant is closed; nothing persists until it reopens."""


class ActionDeniedError(BudgetExceededError):
    """v0.1.26 action-policy denials (``ACTION_QUOTA_EXCEEDED``, ``ACTION_KIND_DENIED``,
    ``ACTION_KIND_NOT_ALLOWED``)."""


class ReservationExpiredError(CyclesProtocolError):
    """``RESERVATION_EXPIRED`` / HTTP 410: the lease ran out (settle through events)."""


class ReservationFinalizedError(CyclesProtocolError):
    """``RESERVATION_FINALIZED``: already committed or released."""


class IdempotencyMismatchError(CyclesProtocolError):
    """``IDEMPOTENCY_MISMATCH``: the key was used before with a different payload."""


class UnitMismatchError(CyclesProtocolError):
    """``UNIT_MISMATCH``: budgets exist for the scope, but in another unit."""

    @property
    def requested_unit(self) -> str | None:
        value = (self.details or {}).get("requested_unit")
        return value if isinstance(value, str) else None

    @property
    def expected_units(self) -> list[str]:
        value = (self.details or {}).get("expected_units")
        return [str(v) for v in value] if isinstance(value, list) else []


class MaxExtensionsExceededError(CyclesProtocolError):
    """``MAX_EXTENSIONS_EXCEEDED``: the reservation may not be extended again."""


class InvalidRequestError(CyclesProtocolError):
    """``INVALID_REQUEST`` / HTTP 400."""


class AuthenticationError(CyclesProtocolError):
    """``UNAUTHORIZED`` / HTTP 401: missing, invalid or revoked API key."""


UnauthorizedError = AuthenticationError
"""Alias named after the wire code."""


class ForbiddenError(CyclesProtocolError):
    """``FORBIDDEN`` / HTTP 403: the key may not act on this tenant or reservation."""


class NotFoundError(CyclesProtocolError):
    """``NOT_FOUND`` / HTTP 404: no such reservation, or no budget for the subject."""


class CyclesUnavailableError(_ErrorFields, CyclesError):
    """The server could not be reached or gave no usable answer; NOT a denial.

    Raised after the client's retries are exhausted. ``status`` is 0 when no HTTP response was
    received; ``attempts`` is how many requests were sent; ``__cause__`` holds the last
    underlying exception, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        error_code: str | None = None,
        reason_code: str | None = None,
        retry_after_ms: int | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        details: dict[str, Any] | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self._set_fields(
            message, status, error_code, reason_code, retry_after_ms, request_id, trace_id, details
        )
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self._describe()} attempts={self.attempts}"

    @property
    def is_denial(self) -> bool:
        return False

    def is_retryable(self) -> bool:
        """Always true: the same request (same idempotency key) may be sent again later."""
        return True


class CyclesTransportError(CyclesUnavailableError):
    """No HTTP response: connection refused, DNS failure, timeout, broken connection."""


class RateLimitedError(CyclesUnavailableError):
    """HTTP 429 ``LIMIT_EXCEEDED`` still returned after the retries (or a ``Retry-After``
    longer than the configured maximum wait). Server throttling, never budget exhaustion."""


class InvalidResponseError(CyclesUnavailableError):
    """A response that is not what the protocol promises (e.g. a 2xx that is not
    schema-valid). The outcome is ambiguous: repeat with the same idempotency key."""


_BY_CODE: dict[str, type[CyclesProtocolError]] = {
    "BUDGET_EXCEEDED": InsufficientBudgetError,
    "OVERDRAFT_LIMIT_EXCEEDED": OverdraftLimitExceededError,
    "DEBT_OUTSTANDING": DebtOutstandingError,
    "BUDGET_FROZEN": BudgetFrozenError,
    "BUDGET_CLOSED": BudgetClosedError,
    "TENANT_CLOSED": TenantClosedError,
    "ACTION_QUOTA_EXCEEDED": ActionDeniedError,
    "ACTION_KIND_DENIED": ActionDeniedError,
    "ACTION_KIND_NOT_ALLOWED": ActionDeniedError,
    "RESERVATION_EXPIRED": ReservationExpiredError,
    "RESERVATION_FINALIZED": ReservationFinalizedError,
    "IDEMPOTENCY_MISMATCH": IdempotencyMismatchError,
    "UNIT_MISMATCH": UnitMismatchError,
    "MAX_EXTENSIONS_EXCEEDED": MaxExtensionsExceededError,
    "INVALID_REQUEST": InvalidRequestError,
    "UNAUTHORIZED": AuthenticationError,
    "FORBIDDEN": ForbiddenError,
    "NOT_FOUND": NotFoundError,
}

_BY_STATUS: dict[int, type[CyclesProtocolError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    410: ReservationExpiredError,
}


def error_class_for(status: int, error_code: str | None) -> type[CyclesProtocolError]:
    """The exception class for a definite (4xx, not 429) rejection.

    The wire code decides when this client knows it; otherwise the HTTP status does. An unknown
    409 code stays a plain :class:`CyclesProtocolError`: it is not assumed to be a denial.
    """
    if error_code is not None and error_code in _BY_CODE:
        return _BY_CODE[error_code]
    return _BY_STATUS.get(status, CyclesProtocolError)
