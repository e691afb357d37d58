"""Listener hardening shared by every way the server is run (CLI, admin port, tests).

Slow clients are bounded by the keep-alive timeout (idle between requests) and a deadline for
a request's headers (:mod:`._protocol`; uvicorn has none). Two caps protect a busy or attacked
server. uvicorn's ``limit_concurrency`` is the hard one: past ``max_connections`` open
connections (idle keep-alives included) it answers every new request with a bare 503, health
checks too. Below it, :class:`InflightLimit` caps requests being handled at ``max_inflight``
and answers the rest with the protocol's 503 body, while the health endpoints are exempt, so a
saturated server still reports itself alive and ready.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings
from .errors import unavailable

log = logging.getLogger("runcycles_server_lite.http")

# Probes a load balancer or orchestrator sends; never refused by the in-flight cap.
HEALTH_PATHS = frozenset(
    {
        "/actuator/health",
        "/actuator/health/readiness",
        "/actuator/health/liveness",
        "/readyz",
        "/healthz",
    }
)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn ``Config`` keywords that bound connections for ``settings``: keep-alive
    timeout, connection cap, and (on the httptools parser) a request-header deadline."""
    options: dict[str, Any] = {
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_connections or None,
    }
    if settings.header_timeout_s > 0:
        try:
            from ._protocol import HeaderTimeoutProtocol
        except ImportError:  # no httptools (e.g. PyPy): uvicorn's h11 parser, no deadline
            log.warning("httptools is not installed: request headers are not timed out")
        else:
            options["http"] = functools.partial(
                HeaderTimeoutProtocol, header_timeout=settings.header_timeout_s
            )
    return options


class InflightLimit:
    """ASGI middleware: at most ``limit`` requests handled at once (0: no limit); the next
    gets a 503 with ``Retry-After``. Health paths are never counted or refused."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            raise unavailable(f"server busy: {self.limit} requests in flight; retry shortly")
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
