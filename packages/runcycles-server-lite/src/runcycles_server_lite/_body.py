"""Request-body guards shared by every JSON endpoint: size, media type and nesting depth.

Each guard answers with the protocol's error envelope (``INVALID_REQUEST``) and the HTTP status
that names the problem (413, 415, 400), so a client never sees a 500 for a hostile body.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from .errors import ProtocolError, invalid

# Deepest JSON nesting accepted (the top-level object is depth 1). The wire models nest at most
# a handful of levels; free-form ``metadata`` gets the rest. It must stay well below orjson's
# serialisation limit (255), which the payload hash hits otherwise and answered with a 500.
MAX_JSON_DEPTH = 64


def require_json(content_type: str | None) -> None:
    """Refuse (415) a body whose ``Content-Type`` is not JSON.

    Accepted: ``application/json`` and any ``application/*+json``, with parameters, and with a
    charset only if it is UTF-8 (the only encoding JSON allows on the wire, RFC 8259).
    """
    media, _, params = (content_type or "").partition(";")
    media = media.strip().lower()
    charset = ""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    is_json = media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
    if is_json and charset in ("", "utf-8", "utf8"):
        return
    raise ProtocolError(
        "INVALID_REQUEST",
        "Content-Type must be application/json (UTF-8), got "
        + (repr(content_type) if content_type else "none"),
        status=415,
        details={"content_type": content_type or ""},
    )


def body_too_large(limit: int) -> ProtocolError:
    """A 413 for a body over ``limit`` bytes."""
    return ProtocolError(
        "INVALID_REQUEST",
        f"request body exceeds {limit} bytes",
        status=413,
        details={"max_body_bytes": limit},
    )


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, read as it streams in and abandoned as soon as it passes ``limit``.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked
    body is counted while it arrives, so an oversized upload is never buffered whole.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON ``value`` nests containers more than ``limit`` levels deep.

    Iterative, so a hostile document cannot exhaust the Python stack while being checked.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def parse_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``body`` parsed as JSON, or a 400 INVALID_REQUEST saying why not (empty, malformed, or
    nested deeper than ``max_depth``)."""
    if not body:
        raise invalid("request body is empty; a JSON object is required")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    # Every nesting level needs an opening bracket, so a body with no more brackets than the
    # limit (almost every request) cannot exceed it and skips the walk.
    brackets = body.count(b"{") + body.count(b"[")
    if brackets > max_depth and isinstance(value, (dict, list)) and too_deep(value, max_depth):
        raise invalid(
            f"request body nests JSON deeper than {max_depth} levels", max_depth=max_depth
        )
    return value
