"""The SDK's token usage in core's pricing terms, and offline counts when usage is missing.

Both ``agents.usage.Usage`` (on ``ModelResponse``) and the Responses API's ``ResponseUsage`` (on
the ``response.completed`` stream event) follow the OpenAI convention, which is also core's:
``input_tokens`` includes cached tokens (``input_tokens_details.cached_tokens``, and
``cache_write_tokens`` where the SDK reports it) and ``output_tokens`` includes
``output_tokens_details.reasoning_tokens``. So the mapping only renames fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runcycles_core.pricing import Pricing, Usage


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def to_usage(usage: Any) -> Usage | None:
    """Core :class:`~runcycles_core.pricing.Usage` from an SDK or Responses usage object, or
    None when it reports no tokens at all (a stream without usage, an adapter that omits it)."""
    if usage is None:
        return None
    input_tokens = _count(getattr(usage, "input_tokens", 0))
    output_tokens = _count(getattr(usage, "output_tokens", 0))
    if input_tokens == 0 and output_tokens == 0:
        return None
    in_details = getattr(usage, "input_tokens_details", None)
    out_details = getattr(usage, "output_tokens_details", None)
    # Clamped so that an inconsistent report (cached > input) still prices rather than fails.
    cache_read = min(_count(getattr(in_details, "cached_tokens", 0)), input_tokens)
    cache_write = min(
        _count(getattr(in_details, "cache_write_tokens", 0)), input_tokens - cache_read
    )
    reasoning = min(_count(getattr(out_details, "reasoning_tokens", 0)), output_tokens)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def request_messages(
    system_instructions: str | None,
    input: str | Iterable[Any],
    tools: Iterable[Any] = (),
) -> list[Any]:
    """What the provider will read, as messages for core's offline token counter: the system
    prompt, the input items and each tool's name, description and JSON schema."""
    messages: list[Any] = []
    if system_instructions:
        messages.append({"role": "system", "content": system_instructions})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
    else:
        messages.extend(input)
    for tool in tools:
        schema = getattr(tool, "params_json_schema", None)
        messages.append(
            {
                "tool": str(getattr(tool, "name", "")),
                "description": str(getattr(tool, "description", "") or ""),
                "parameters": repr(schema) if schema else "",
            }
        )
    return messages


def counted_usage(pricing: Pricing, messages: list[Any], output: Iterable[Any]) -> Usage:
    """Usage counted offline from the request and whatever output was seen, for calls whose
    provider reported none (early stream stop, streams without usage)."""
    return Usage(
        input_tokens=pricing.count_input_tokens(messages=messages),
        output_tokens=sum(
            pricing.count_input_tokens(prompt=o) if isinstance(o, str) else _item_tokens(pricing, o)
            for o in output
        ),
    )


def _item_tokens(pricing: Pricing, item: Any) -> int:
    return pricing.count_input_tokens(messages=[item])
