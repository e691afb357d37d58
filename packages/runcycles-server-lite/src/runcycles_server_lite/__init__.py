"""runcycles-server-lite: a Cycles Protocol v0 budget authority on Starlette and Redis Lua."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Settings

if TYPE_CHECKING:
    from .app import create_app
    from .embedded import EmbeddedRedis

__all__ = ["EmbeddedRedis", "Settings", "create_app", "__version__"]
__version__ = "0.1.0"

# The admin CLI imports this package on every command: loading the app (Starlette, redis, Lua
# scripts, pydantic models) only when it is asked for keeps each command well under a second.
_LAZY = {"create_app": ".app", "EmbeddedRedis": ".embedded"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
