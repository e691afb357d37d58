"""runcycles-server-lite: a Cycles Protocol v0 budget authority on Starlette and Redis Lua."""

from __future__ import annotations

from .app import create_app
from .config import Settings
from .embedded import EmbeddedRedis

__all__ = ["EmbeddedRedis", "Settings", "create_app", "__version__"]
__version__ = "0.1.0"
