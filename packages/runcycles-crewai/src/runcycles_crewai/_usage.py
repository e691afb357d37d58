"""CrewAI's usage counters mapped onto core's :class:`~runcycles_core.pricing.Usage`."""

from __future__ import annotations

from typing import Any

from runcycles_core.pricing import Usage


def _int(metrics: Any, name: str) -> int:
    value = getattr(metrics, name, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def to_usage(metrics: Any) -> Usage:
    """A ``crewai.types.usage_metrics.UsageMetrics`` (or a delta of two) as core's Usage.

    CrewAI's ``prompt_tokens`` counts cached prompt tokens too and ``completion_tokens`` counts
    reasoning, the same conventions as core's; the sub-counts are capped at their totals so a
    provider that reports them inconsistently cannot make the usage invalid.
    """
    input_tokens = _int(metrics, "prompt_tokens")
    output_tokens = _int(metrics, "completion_tokens")
    cache_read = min(_int(metrics, "cached_prompt_tokens"), input_tokens)
    cache_write = min(_int(metrics, "cache_creation_tokens"), input_tokens - cache_read)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=min(_int(metrics, "reasoning_tokens"), output_tokens),
    )


def reported(metrics: Any) -> bool:
    """Whether the delta holds any reported usage (a provider that reports none leaves 0)."""
    return _int(metrics, "successful_requests") > 0 or _int(metrics, "total_tokens") > 0
