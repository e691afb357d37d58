"""Structured logs: every record carries the request and trace ids of the request it was
logged under, as JSON lines (the default off a terminal) or as text.

:class:`~runcycles_server_lite.http.TraceMiddleware` sets the ids in a context variable; a
logging filter stamps them on each record, so handlers, scripts and library loggers need no
``extra=`` plumbing. Text output escapes CR/LF so a client-supplied value cannot forge log lines.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any, Literal

import orjson

LogFormat = Literal["json", "text"]

request_context: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "runcycles_request", default=None
)

_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class RequestIdsFilter(logging.Filter):
    """Adds ``request_id`` and ``trace_id`` (or None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = request_context.get()
        if not hasattr(record, "request_id"):
            record.request_id = ids[0] if ids else None
        if not hasattr(record, "trace_id"):
            record.trace_id = ids[1] if ids else None
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, ids, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and value is not None and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines with the ids appended; CR/LF escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(
            f"{k}={v}" for k in ("request_id", "trace_id") if (v := getattr(record, k, None))
        )
        if ids:
            line = f"{line} [{ids}]"
        head, sep, tail = line.partition("\nTraceback")
        return head.replace("\r", "\\r").replace("\n", "\\n") + sep + tail


def configure(level: str = "info", fmt: LogFormat | None = None) -> None:
    """Route the root logger (and uvicorn's) through one handler with request ids.

    ``fmt`` defaults to text on a terminal and JSON otherwise.
    """
    if fmt is None:
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
