"""The Starlette application: runtime plane, admin plane, dashboard and health, on one port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import admin, events_api, runtime
from ._persistence import probe_async
from ._serving import InflightLimit
from .auth import Authenticator
from .config import Settings
from .contract import OPENAPI_PATH, serve_openapi
from .dashboard import routes as dashboard_routes
from .http import JSONResponse, TraceMiddleware, http_exception_handler
from .metrics import METRICS_PATH, MetricsMiddleware, metrics_endpoint
from .services import Services, services
from .store import Store
from .webhooks import api as webhooks_api
from .webhooks.dispatcher import Dispatcher
from .webhooks.sealing import box_for

log = logging.getLogger("runcycles_server_lite")


async def liveness(request: Request) -> Response:
    """UP while the process serves and its store answers, or has been unreachable for less
    than ``liveness_store_grace_s``; past that, DOWN (503) so an orchestrator restarts us."""
    svc = services(request)
    now = time.monotonic()
    try:
        ok = bool(await asyncio.wait_for(svc.store.ping(), timeout=1.0))
    except Exception:  # unreachable, timed out, or refused: all count as down
        ok = False
    if ok:
        svc.store_down_since = None
        return JSONResponse({"status": "UP"})
    if svc.store_down_since is None:
        svc.store_down_since = now
    down_for = now - svc.store_down_since
    grace = svc.settings.liveness_store_grace_s
    body = {
        "status": "UP" if down_for < grace else "DOWN",
        "store_unreachable_s": round(down_for, 1),
    }
    return JSONResponse(body, status_code=200 if down_for < grace else 503)


async def readiness(request: Request) -> Response:
    svc = services(request)
    try:
        ok = await svc.store.ping()
    except Exception as exc:  # any store failure means not ready
        log.warning("readiness: store ping failed: %s", exc)
        ok = False
    redis_health: dict[str, Any] = {"status": "UP" if ok else "DOWN"}
    if ok:
        try:
            redis_health["details"] = (await probe_async(svc.store.redis)).details()
        except Exception as exc:  # details are informative; never fail readiness over them
            log.debug("readiness: persistence probe failed: %s", exc)
    body = {"status": "UP" if ok else "DOWN", "components": {"redis": redis_health}}
    return JSONResponse(body, status_code=200 if ok else 503)


def health_routes() -> list[BaseRoute]:
    return [
        Route("/actuator/health", readiness, methods=["GET"]),
        Route("/actuator/health/readiness", readiness, methods=["GET"]),
        Route("/actuator/health/liveness", liveness, methods=["GET"]),
        Route("/readyz", readiness, methods=["GET"]),
        Route("/healthz", liveness, methods=["GET"]),
        Route(OPENAPI_PATH, serve_openapi, methods=["GET"]),
        Route(METRICS_PATH, metrics_endpoint, methods=["GET"]),
    ]


def create_app(settings: Settings, *, admin_only: bool = False) -> Starlette:
    """Build the app for ``settings``; ``settings.redis_url`` must be set.

    The store connection opens lazily and closes on shutdown; background jobs (the expiry
    sweeper) run for the app's lifetime. ``admin_only`` serves just the admin plane and health,
    for a second ``--admin-port`` listener.
    """
    if not settings.redis_url:
        raise ValueError("settings.redis_url is required (start the embedded store first)")
    store = Store.from_url(settings.redis_url, prefix=settings.key_prefix)
    store.secret_box = box_for(settings.webhook_secret_key)
    svc = Services(
        settings=settings,
        store=store,
        auth=Authenticator(store, settings.admin_api_key, settings.auth_cache_ttl_s),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if not admin_only:
                await stack.enter_async_context(runtime.background(svc))
            dispatcher = Dispatcher(store, settings)
            if not admin_only:
                dispatcher.start()
            try:
                yield
            finally:
                # Background jobs stop before the store they use closes.
                await dispatcher.stop()
                await stack.aclose()
                await store.close()

    # Starlette matches routes in order: the runtime's hot paths go first so a reserve is not
    # tested against every admin route before it matches (measured: ~20 µs per request).
    routes: list[BaseRoute] = [] if admin_only else runtime.routes()
    routes += [
        *health_routes(),
        *admin.routes(),
        *events_api.routes(),
        *webhooks_api.routes(),
        *dashboard_routes(),
    ]
    app = Starlette(
        routes=routes,
        # Metrics outermost (they count every answer, a 503 of the cap too); the in-flight
        # cap sits inside the trace middleware, so its 503 carries the ids.
        middleware=[
            Middleware(MetricsMiddleware),
            Middleware(TraceMiddleware),
            Middleware(InflightLimit, limit=settings.max_inflight),
        ],
        exception_handlers={HTTPException: http_exception_handler},
        lifespan=lifespan,
    )
    app.state.services = svc
    return app
