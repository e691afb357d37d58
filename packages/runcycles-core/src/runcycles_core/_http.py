"""Wire plumbing shared by the sync and async clients: what to send and what a response means.

A :class:`Call` describes one logical operation (method, path, body, query, expected status and
response model). :func:`interpret` turns an HTTP response into a parsed model, a definite
:class:`~runcycles_core.errors.CyclesProtocolError` (raised), or an :class:`Ambiguous` failure
the retry loop may repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from ._retry import Ambiguous, parse_retry_after_ms
from ._trace import TraceContext
from .config import CyclesConfig
from .errors import (
    BudgetExceededError,
    CyclesTransportError,
    CyclesUnavailableError,
    InvalidResponseError,
    RateLimitedError,
    error_class_for,
)
from .models import CyclesModel, ErrorResponse, ResponseMeta

logger = logging.getLogger("runcycles_core")

API_KEY_HEADER = "X-Cycles-API-Key"
IDEMPOTENCY_KEY_HEADER = "X-Idempotency-Key"

RESERVATIONS_PATH = "/v1/reservations"
DECIDE_PATH = "/v1/decide"
BALANCES_PATH = "/v1/balances"
EVENTS_PATH = "/v1/events"
EVIDENCE_PATH = "/v1/evidence"
JWKS_PATH = "/v1/.well-known/cycles-jwks.json"

T = TypeVar("T", bound=CyclesModel)


def reservation_path(reservation_id: str, action: str | None = None) -> str:
    if not isinstance(reservation_id, str) or not 1 <= len(reservation_id) <= 128:
        raise ValueError("reservation_id must be a string of 1..128 characters")
    path = f"{RESERVATIONS_PATH}/{quote(reservation_id, safe='')}"
    return f"{path}/{action}" if action else path


@dataclass(frozen=True)
class Call(Generic[T]):
    """One logical request; re-sent unchanged (same idempotency key) on every retry."""

    method: str
    path: str
    model: type[T]
    expected_status: int = 200
    body: CyclesModel | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str | None:
        key = getattr(self.body, "idempotency_key", None)
        return key if isinstance(key, str) else None

    def build(
        self, http: httpx.Client | httpx.AsyncClient, trace: TraceContext, config: CyclesConfig
    ) -> httpx.Request:
        headers = trace.headers()
        key = self.idempotency_key
        if key is not None:
            # The spec requires header and body keys to agree; both come from the one model.
            headers[IDEMPOTENCY_KEY_HEADER] = key
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        return http.build_request(
            self.method,
            self.path,
            content=self.body.wire_bytes() if self.body is not None else None,
            params=dict(self.params) if self.params else None,
            headers=headers,
            timeout=timeout_of(config),
        )


_TIMEOUTS: dict[tuple[float, float, float, float], httpx.Timeout] = {}


def timeout_of(config: CyclesConfig) -> httpx.Timeout:
    """The request timeout for ``config`` (one shared instance per distinct setting)."""
    key = (config.connect_timeout, config.read_timeout, config.write_timeout, config.pool_timeout)
    found = _TIMEOUTS.get(key)
    if found is None:
        found = httpx.Timeout(connect=key[0], read=key[1], write=key[2], pool=key[3])
        if len(_TIMEOUTS) < 64:
            _TIMEOUTS[key] = found
    return found


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def response_meta(resp: httpx.Response, attempts: int) -> ResponseMeta:
    h = resp.headers
    # Built from values already typed here: skip validation (every response pays for it).
    return ResponseMeta.model_construct(
        status=resp.status_code,
        request_id=h.get("x-request-id"),
        trace_id=h.get("x-cycles-trace-id"),
        tenant=h.get("x-cycles-tenant"),
        rate_limit_remaining=_int_header(h, "x-ratelimit-remaining"),
        rate_limit_reset=_int_header(h, "x-ratelimit-reset"),
        attempts=attempts,
    )


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _error_fields(
    body: Any,
) -> tuple[str | None, str | None, dict[str, Any] | None, str | None, str | None]:
    """(code, message, details, request_id, trace_id) of an error body. A body that is not a
    valid ErrorResponse still yields whatever string fields it has, so a slightly
    non-conformant server's error code is not lost."""
    if not isinstance(body, dict):
        return None, None, None, None, None
    try:
        e = ErrorResponse.parse_response(body)
    except ValidationError:

        def text(name: str) -> str | None:
            value = body.get(name)
            return value if isinstance(value, str) and value else None

        details = body.get("details")
        return (
            text("error"),
            text("message"),
            details if isinstance(details, dict) else None,
            text("request_id"),
            text("trace_id"),
        )
    return e.error, e.message, e.details, e.request_id, e.trace_id


def interpret(
    call: Call[T], resp: httpx.Response, trace: TraceContext, attempts: int
) -> T | Ambiguous:
    """Parse a success, raise a definite rejection, or describe an ambiguous failure."""
    status = resp.status_code
    request_id = resp.headers.get("x-request-id")
    trace_id = resp.headers.get("x-cycles-trace-id") or trace.trace_id
    body = _json_or_none(resp)

    if status == call.expected_status:
        try:
            parsed = call.model.parse_response(body)
        except ValidationError as exc:
            return Ambiguous(
                InvalidResponseError,
                f"{call.method} {call.path}: {status} response is not a valid "
                f"{call.model.__name__}: {exc.errors()[0].get('msg', exc)}",
                status=status,
                request_id=request_id,
                trace_id=trace_id,
                cause=exc,
            )
        parsed._meta = response_meta(resp, attempts)
        return parsed

    code, message, details, body_request_id, body_trace_id = _error_fields(body)
    if message is None:
        message = resp.text[:200] or resp.reason_phrase or "no body"
    request_id = body_request_id or request_id
    trace_id = body_trace_id or trace_id

    if status >= 500 or status == 429:
        kind: type[CyclesUnavailableError] = (
            RateLimitedError if status == 429 else CyclesUnavailableError
        )
        return Ambiguous(
            kind,
            f"{call.method} {call.path}: HTTP {status}: {message}",
            status=status,
            error_code=code,
            retry_after_ms=parse_retry_after_ms(resp.headers.get("retry-after")),
            request_id=request_id,
            trace_id=trace_id,
            details=details,
        )
    if 400 <= status < 500:
        err = error_class_for(status, code)(
            message,
            status=status,
            error_code=code,
            request_id=request_id,
            trace_id=trace_id,
            details=details,
        )
        if isinstance(err, BudgetExceededError):
            _note_request_amount(err, call.body)
        raise err
    return Ambiguous(
        InvalidResponseError,
        f"{call.method} {call.path}: unexpected HTTP {status} (expected {call.expected_status})",
        status=status,
        request_id=request_id,
        trace_id=trace_id,
    )


def _note_request_amount(err: BudgetExceededError, body: CyclesModel | None) -> None:
    """Give a denial the amount and unit its request asked for (reserve/decide: ``estimate``;
    commit/event: ``actual``), so its message can name them whatever the server sent."""
    asked = getattr(body, "estimate", None) or getattr(body, "actual", None)
    amount, unit = getattr(asked, "amount", None), getattr(asked, "unit", None)
    if isinstance(amount, int) and unit is not None:
        err.request_amount = amount
        err.request_unit = str(getattr(unit, "value", unit))


def transport_failure(
    call: Call[Any], exc: httpx.TransportError, trace: TraceContext, base_url: str = ""
) -> Ambiguous:
    """No HTTP response. A failed connect (``ConnectError``: refused, unknown host) is marked
    unreachable, so it is retried only within the connect budget."""
    return Ambiguous(
        CyclesTransportError,
        f"{call.method} {base_url}{call.path}: {type(exc).__name__}: {exc}",
        trace_id=trace.trace_id,
        cause=exc,
        unreachable=isinstance(exc, httpx.ConnectError),
    )


def give_up(
    call: Call[Any], failure: Ambiguous, attempts: int, spent: float, config: CyclesConfig
) -> CyclesUnavailableError:
    """The error a call raises after its last attempt, logged once (never once per attempt:
    a server that is down must not flood the log)."""
    message = failure.message
    if failure.unreachable:
        message = (
            f"cannot reach the Cycles server at {config.base_url} "
            f"({attempts} attempt{'s' if attempts != 1 else ''} in {spent:.1f}s; last: "
            f"{failure.message}). Check base_url / CYCLES_BASE_URL and that the server is "
            f"running; retry_connect_budget / CYCLES_RETRY_CONNECT_BUDGET "
            f"(now {config.retry_connect_budget:g}s) sets how long to keep trying."
        )
    logger.warning(
        "cycles %s %s failed after %d attempt(s): %s", call.method, call.path, attempts, message
    )
    return failure.to_error(attempts, message)


def log_retry(call: Call[Any], failure: Ambiguous, attempt: int, delay: float) -> None:
    # DEBUG: the call's final failure is logged once, at WARNING, by give_up.
    logger.debug(
        "cycles %s %s attempt %d failed (%s); retrying in %.2fs with idempotency key %s",
        call.method,
        call.path,
        attempt,
        failure.message,
        delay,
        call.idempotency_key,
    )
