"""Runtime plane: the Cycles Protocol v0 endpoints under /v1 (placeholder until implemented)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.routing import BaseRoute

from .services import Services


def routes() -> list[BaseRoute]:
    return []


@contextlib.asynccontextmanager
async def background(svc: Services) -> AsyncIterator[None]:
    """Background jobs for the app's lifetime (the expiry sweeper)."""
    yield
