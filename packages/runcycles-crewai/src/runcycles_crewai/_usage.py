"""CrewAI's usage counters mapped onto the kit's usage normalisation."""

from __future__ import annotations

from typing import Any

from runcycles_core.plugin import normalize_usage
from runcycles_core.pricing import Usage


def to_usage(metrics: Any) -> Usage | None:
    """A ``crewai.types.usage_metrics.UsageMetrics`` (or a delta of two) as core's Usage, or
    None when it holds no tokens (the provider reported none).

    CrewAI's ``prompt_tokens`` counts cached prompt tokens too and ``completion_tokens`` counts
    reasoning: core's conventions, so the fields map one to one.
    """
    return normalize_usage(
        getattr(metrics, "prompt_tokens", 0),
        getattr(metrics, "completion_tokens", 0),
        cache_read_tokens=getattr(metrics, "cached_prompt_tokens", 0),
        cache_write_tokens=getattr(metrics, "cache_creation_tokens", 0),
        reasoning_tokens=getattr(metrics, "reasoning_tokens", 0),
    )
