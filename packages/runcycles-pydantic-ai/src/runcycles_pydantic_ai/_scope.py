"""Per-run subject levels and dimensions, carried by the run's own ``metadata``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_ai import RunContext

from runcycles_core.plugin import LEVELS

__all__ = ["METADATA_KEY", "cycles_metadata", "run_scope"]

#: The key of the run ``metadata`` entry the capability reads.
METADATA_KEY = "runcycles"


def cycles_metadata(
    *,
    subject: Mapping[str, str] | None = None,
    dimensions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``metadata`` that overrides subject levels (``workspace`` … ``toolset``) and adds
    dimensions for one run's model and tool calls::

        await agent.run("Refund order 1234", metadata=cycles_metadata(subject={"agent": "refunds"}))

    Merge it into metadata of your own with ``{**mine, **cycles_metadata(...)}``.
    """
    unknown = set(subject or {}) - set(LEVELS) | ({"tenant"} & set(subject or {}))
    if unknown:
        raise ValueError(f"not a subject level that can be overridden per run: {sorted(unknown)}")
    return {METADATA_KEY: {"subject": dict(subject or {}), "dimensions": dict(dimensions or {})}}


def run_scope(ctx: RunContext[Any]) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """The per-run ``(subject, dimensions)`` of ``ctx``'s run (None: the settings' own)."""
    metadata = getattr(ctx, "metadata", None)
    entry = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(entry, Mapping):
        return None, None
    subject, dimensions = entry.get("subject"), entry.get("dimensions")
    return (
        dict(subject) if isinstance(subject, Mapping) and subject else None,
        dict(dimensions) if isinstance(dimensions, Mapping) and dimensions else None,
    )
