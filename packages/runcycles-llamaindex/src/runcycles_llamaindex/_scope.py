"""Per-run subject levels and dimensions, carried by a ContextVar.

LlamaIndex passes no per-run metadata to callbacks, but its agent workflows run their steps in
tasks created inside ``agent.run(...)``, which copy the caller's context: values set around the
call reach every LLM and tool call of the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from runcycles_core.plugin import LEVELS

__all__ = ["RunScope", "current_scope", "cycles_run"]


@dataclass(frozen=True)
class RunScope:
    subject: Mapping[str, str] | None = None
    dimensions: Mapping[str, str] | None = None


_SCOPE: ContextVar[RunScope | None] = ContextVar("runcycles_llamaindex_scope", default=None)


def current_scope() -> RunScope:
    return _SCOPE.get() or RunScope()


@contextlib.contextmanager
def cycles_run(
    *,
    subject: Mapping[str, str] | None = None,
    dimensions: Mapping[str, str] | None = None,
) -> Iterator[RunScope]:
    """Override subject levels (``workspace`` … ``toolset``) and add dimensions for the LLM and
    tool calls made inside the block (nested blocks merge over outer ones)::

        with cycles_run(subject={"agent": "refunds"}, dimensions={"customer": "c-9"}):
            await agent.run("Refund order 1234")
    """
    unknown = set(subject or {}) - set(LEVELS) | ({"tenant"} & set(subject or {}))
    if unknown:
        raise ValueError(f"not a subject level that can be overridden per run: {sorted(unknown)}")
    outer = current_scope()
    scope = RunScope(
        subject={**(outer.subject or {}), **(subject or {})} or None,
        dimensions={**(outer.dimensions or {}), **(dimensions or {})} or None,
    )
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
