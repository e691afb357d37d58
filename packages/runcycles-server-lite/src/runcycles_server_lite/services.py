"""Per-process shared objects handed to every request handler."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from .auth import Authenticator
from .config import Settings
from .store import Store


@dataclass(slots=True)
class Services:
    """Reachable from handlers as ``services(request)``."""

    settings: Settings
    store: Store
    auth: Authenticator
    # monotonic time of the first failed liveness ping of the current outage, or None
    store_down_since: float | None = None


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
