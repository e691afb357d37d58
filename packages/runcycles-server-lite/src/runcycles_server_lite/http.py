"""HTTP glue shared by both planes: JSON in and out, trace/request ids, the error envelope."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from typing import Any

import orjson
import redis.exceptions as redis_errors
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._body import parse_json, read_limited, require_json
from .errors import ProtocolError, unavailable
from .logs import request_context
from .metrics import STORE_ERRORS

log = logging.getLogger("runcycles_server_lite.http")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class JSONResponse(Response):
    """orjson-encoded JSON response (non-str keys and numpy are not needed here)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def raw_json_response(
    body: bytes | str, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A response whose JSON body is already serialised (stored idempotent replays)."""
    data = body.encode() if isinstance(body, str) else body
    return Response(data, status_code=status, headers=headers, media_type="application/json")


def trace_id_from_headers(traceparent: str | None, cycles_trace: str | None) -> str:
    """The protocol's trace-id precedence: valid traceparent, then X-Cycles-Trace-Id, then new.

    Malformed headers are ignored, never rejected.
    """
    if traceparent:
        m = _TRACEPARENT.match(traceparent.strip())
        if m and m.group(1) != _ZERO_TRACE and m.group(2) != _ZERO_SPAN:
            return m.group(1)
    if cycles_trace:
        t = cycles_trace.strip()
        if _TRACE_ID.match(t) and t != _ZERO_TRACE:
            return t
    while True:
        t = secrets.token_hex(16)
        if t != _ZERO_TRACE:
            return t


def error_body(
    code: str,
    message: str,
    request_id: str,
    trace_id: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error": code,
        "message": message,
        "request_id": request_id,
        "trace_id": trace_id,
    }
    if details:
        body["details"] = details
    return body


def request_ids(request: Request) -> tuple[str, str]:
    """(request_id, trace_id) assigned to this request by :class:`TraceMiddleware`."""
    state = request.scope.get("state", {})
    return state.get("request_id", ""), state.get("trace_id", "")


async def read_json(request: Request, *, optional: bool = False) -> Any:
    """The request body parsed as JSON, or the protocol error saying why not: 415 for a body
    whose Content-Type is not JSON, 413 over the configured ``max_body_bytes`` (read no
    further), 400 when empty (any Content-Type), malformed or too deep.

    ``optional``: an empty body (with any Content-Type, or none) is ``{}``, not an error.
    """
    content_type = request.headers.get("content-type")
    if content_type:  # a declared non-JSON body is refused before a byte of it is read
        require_json(content_type)
    body = await read_limited(request, request.app.state.services.settings.max_body_bytes)
    if not body.strip():
        if optional:
            return {}
        # No body at all is an invalid request (400, as the protocol documents), whatever
        # the Content-Type; only a body that is there and not JSON is 415.
        return parse_json(body)
    require_json(content_type)
    return parse_json(body)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the protocol's error envelope."""
    assert isinstance(exc, HTTPException)
    request_id, trace_id = request_ids(request)
    code = {404: "NOT_FOUND", 401: "UNAUTHORIZED", 403: "FORBIDDEN"}.get(
        exc.status_code, "INVALID_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR"
    )
    return JSONResponse(
        error_body(code, str(exc.detail), request_id, trace_id),
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


class TraceMiddleware:
    """Assigns request and trace ids, echoes them on every response, and turns any
    exception into the protocol's error envelope (so even 500s carry both headers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traceparent = cycles_trace = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"x-cycles-trace-id":
                cycles_trace = value.decode("latin-1")
        trace_id = trace_id_from_headers(traceparent, cycles_trace)
        request_id = str(uuid.uuid4())
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["trace_id"] = trace_id
        extra = [
            (b"x-request-id", request_id.encode()),
            (b"x-cycles-trace-id", trace_id.encode()),
        ]
        started = False

        async def send_with_ids(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *extra]
                tenant = state.get("tenant")
                if tenant:
                    message["headers"].append((b"x-cycles-tenant", tenant.encode()))
            await send(message)

        token = request_context.set((request_id, trace_id))
        try:
            await self.app(scope, receive, send_with_ids)
        except ClientDisconnect:
            # The client hung up before its body arrived: nobody is left to answer, and it is
            # the client's doing, not a server fault worth a traceback.
            log.debug(
                "client disconnected mid-request on %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"request_id": request_id, "trace_id": trace_id},
            )
        except Exception as exc:
            if started:
                raise
            err = _as_protocol_error(exc, scope, request_id, trace_id)
            resp = JSONResponse(
                error_body(err.code, err.message, request_id, trace_id, err.details),
                status_code=err.status,
                headers=err.headers,
            )
            await resp(scope, receive, send_with_ids)
        finally:
            request_context.reset(token)


def _as_protocol_error(
    exc: Exception, scope: Scope, request_id: str, trace_id: str
) -> ProtocolError:
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
        STORE_ERRORS.inc()
        log.warning(
            "store unavailable on %s %s: %s",
            scope.get("method"),
            scope.get("path"),
            exc,
            extra={"request_id": request_id, "trace_id": trace_id},
        )
        return unavailable()
    log.exception(
        "unhandled error on %s %s",
        scope.get("method"),
        scope.get("path"),
        extra={"request_id": request_id, "trace_id": trace_id},
    )
    return ProtocolError("INTERNAL_ERROR", "internal server error")
