"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Counters and histograms live in this process, or, when the server runs several worker
processes, in ``PROMETHEUS_MULTIPROC_DIR`` (the CLI creates and wipes one before it starts the
workers), so one scrape of any worker reports the whole server. Scope state (how many scopes
are over their limit or in debt) is read from the store at scrape time: it is shared state, not
something one process could count.

Labels are bounded: route templates (never raw paths, so no reservation ids), methods, status
codes, decisions and the protocol's reason codes. No tenant, scope, reservation or idempotency
id ever becomes a label.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections import Counter as Tally
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ProtocolError

log = logging.getLogger("runcycles_server_lite")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"

# The codes under which the protocol denies a reservation (a live reserve answers them as errors;
# dry runs and decide answer decision=DENY with the same reason_code).
DENIAL_CODES = frozenset(
    {
        "BUDGET_EXCEEDED",
        "OVERDRAFT_LIMIT_EXCEEDED",
        "DEBT_OUTSTANDING",
        "BUDGET_FROZEN",
        "BUDGET_CLOSED",
        "BUDGET_NOT_FOUND",
        "TENANT_CLOSED",
    }
)

# Our own registry, not prometheus-client's global one: an embedding process's metrics and
# ours never collide, and several apps in one process (tests) share these series.
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "cycles_http_requests",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "cycles_http_request_duration_seconds",
    "Time from request start to the end of the response, by route template and method.",
    ["route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
DECISIONS = Counter(
    "cycles_decisions",
    "Budget decisions by operation (reserve, decide, event), decision and reason code.",
    ["operation", "decision", "reason_code"],
    registry=REGISTRY,
)
SETTLEMENTS = Counter(
    "cycles_reservations_finalized",
    "Reservations finalized, by outcome: committed and released count answered requests "
    "(an idempotent replay counts again), expired counts the sweeper's expiries.",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "cycles_webhook_deliveries",
    "Webhook delivery results: SUCCESS and FAILED are final, RETRYING means an attempt failed "
    "and another is scheduled.",
    ["outcome"],
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "cycles_store_errors",
    "Requests that failed with 503 because the store was unreachable or timed out.",
    registry=REGISTRY,
)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # An unmatched path is whatever a client sent: one label value for all of them.
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route, method = _route(scope), scope.get("method", "")
            REQUESTS.labels(route, method, str(status)).inc()
            LATENCY.labels(route, method).observe(time.perf_counter() - started)


def record_decision(operation: str, reply: Any) -> None:
    """Count the decision in a reserve / decide / event script reply (``{"OK", status,
    body}`` or ``{"ERR", code, ...}``); other errors are only counted as requests."""
    if not isinstance(reply, list) or not reply:
        return
    if reply[0] == "OK":
        try:
            body = orjson.loads(reply[2])
        except (orjson.JSONDecodeError, IndexError, TypeError):
            return
        decision = body.get("decision") if isinstance(body, dict) else None
        if isinstance(decision, str):
            reason = body.get("reason_code")
            DECISIONS.labels(operation, decision, reason if isinstance(reason, str) else "").inc()
    elif len(reply) > 1 and str(reply[1]) in DENIAL_CODES:
        DECISIONS.labels(operation, "DENY", str(reply[1])).inc()


def record_settlement(outcome: str, reply: Any, count: int = 1) -> None:
    """Count ``count`` reservations finalized as ``outcome`` if ``reply`` is a success."""
    if reply is True or (isinstance(reply, list) and reply and reply[0] == "OK"):
        SETTLEMENTS.labels(outcome).inc(count)


class _Scopes(Collector):
    """Scope gauges from one read of every budget (computed per scrape); ``budgets`` is None
    when the store could not be read, and only ``cycles_store_up 0`` is reported."""

    def __init__(self, budgets: list[dict[str, str]] | None) -> None:
        self.budgets = budgets

    def collect(self) -> Any:
        up = GaugeMetricFamily("cycles_store_up", "1 if this scrape could read the store, else 0.")
        up.add_metric([], 0 if self.budgets is None else 1)
        yield up
        if self.budgets is None:
            return
        over: Tally[str] = Tally()
        debt: Tally[str] = Tally()
        total: Tally[str] = Tally()
        for b in self.budgets:
            unit = b.get("unit", "")
            total[unit] += 1
            if b.get("is_over_limit") == "true":
                over[unit] += 1
            if int(b.get("debt") or 0) > 0:
                debt[unit] += 1
        for name, doc, tally in (
            ("cycles_scopes", "Budgeted scopes, by unit.", total),
            (
                "cycles_scopes_over_limit",
                "Scopes currently over their limit (is_over_limit), by unit.",
                over,
            ),
            ("cycles_scopes_in_debt", "Scopes currently carrying debt, by unit.", debt),
        ):
            family = GaugeMetricFamily(name, doc, labels=["unit"])
            for unit in sorted(total):
                family.add_metric([unit], tally[unit])
            yield family


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: this server's counters (every worker's) plus the scopes' state."""
    from . import provisioning as prov
    from .services import services

    svc = services(request)
    token = svc.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ProtocolError(
                "UNAUTHORIZED",
                "/metrics needs Authorization: Bearer <RUNCYCLES_METRICS_TOKEN>",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    try:
        budgets: list[dict[str, str]] | None = await prov.list_budgets(svc.store)
    except Exception as exc:  # the counters matter most exactly when the store is down
        log.warning("/metrics: reading the scopes from the store failed: %s", exc)
        budgets = None
    scopes = CollectorRegistry()
    scopes.register(_Scopes(budgets))
    return Response(body + generate_latest(scopes), media_type=CONTENT_TYPE_LATEST)
