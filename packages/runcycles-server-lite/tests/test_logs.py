"""Structured logs carry the request and trace ids of the request they were logged under."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from runcycles_server_lite.http import TraceMiddleware
from runcycles_server_lite.logs import JSONFormatter, RequestIdsFilter, TextFormatter
from runcycles_server_lite.testing import run


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdsFilter())
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_lines_logged_during_a_request_carry_its_ids() -> None:
    logger, stream = _capture(JSONFormatter())

    async def handler(request: Request) -> PlainTextResponse:
        logger.info("handling %s", "reserve", extra={"tenant": "acme"})
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/x", handler)], middleware=[Middleware(TraceMiddleware)])

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/x", headers={"X-Cycles-Trace-Id": "ab" * 16})

    resp = asyncio.run(call())
    line = json.loads(stream.getvalue().strip())
    assert line["message"] == "handling reserve"
    assert line["tenant"] == "acme"
    assert line["trace_id"] == "ab" * 16 == resp.headers["x-cycles-trace-id"]
    assert line["request_id"] == resp.headers["x-request-id"]
    assert line["level"] == "INFO"

    logger.info("outside any request")
    outside = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert "request_id" not in outside


def test_text_lines_escape_newlines_so_input_cannot_forge_entries() -> None:
    logger, stream = _capture(TextFormatter())
    logger.warning("bad key %r", "x\nFAKE 2026-01-01 INFO admin login ok")
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert "\\n" in out


def test_server_logs_json_off_a_terminal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from runcycles_server_lite import logs

    code = (
        "import logging, runcycles_server_lite.logs as l;"
        "l.configure('info');"
        "logging.getLogger('runcycles_server_lite').info('ready')"
    )
    out = run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stderr.strip())["message"] == "ready"
    assert logs.JSONFormatter  # the module under test is importable in-process too
