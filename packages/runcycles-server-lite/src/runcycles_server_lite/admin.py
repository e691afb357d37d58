"""Admin plane: a compatible subset of the governance admin API (placeholder)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []
