"""The SDK's token usage in core's pricing terms, and a request as messages for offline counts.

Both ``agents.usage.Usage`` (on ``ModelResponse``) and the Responses API's ``ResponseUsage`` (on
the ``response.completed`` stream event) follow the OpenAI convention, which is also core's:
``input_tokens`` includes cached tokens (``input_tokens_details.cached_tokens``, and
``cache_write_tokens`` where the SDK reports it) and ``output_tokens`` includes
``output_tokens_details.reasoning_tokens``. So the mapping only renames fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runcycles_core.plugin import Received, normalize_usage
from runcycles_core.pricing import Usage


def to_usage(usage: Any) -> Usage | None:
    """Core :class:`~runcycles_core.pricing.Usage` from an SDK or Responses usage object, or
    None when it reports no tokens at all (a stream without usage, an adapter that omits it)."""
    if usage is None:
        return None
    in_details = getattr(usage, "input_tokens_details", None)
    out_details = getattr(usage, "output_tokens_details", None)
    return normalize_usage(
        getattr(usage, "input_tokens", 0),
        getattr(usage, "output_tokens", 0),
        cache_read_tokens=getattr(in_details, "cached_tokens", 0),
        cache_write_tokens=getattr(in_details, "cache_write_tokens", 0),
        reasoning_tokens=getattr(out_details, "reasoning_tokens", 0),
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


def received_output(output: Iterable[Any]) -> Received:
    """A response's output items as the kit's :class:`Received`: a message's text as one
    text (its content parts joined), a function call as its name and arguments, any other
    item as itself (counted like a message)."""
    received = Received()
    for item in output:
        parts = getattr(item, "content", None)
        if getattr(item, "type", None) == "message" and isinstance(parts, list):
            text = "".join(str(getattr(p, "text", "") or "") for p in parts)
            received.add(text or None)
        elif getattr(item, "type", None) == "function_call":
            received.add(
                {"name": getattr(item, "name", ""), "args": getattr(item, "arguments", "")}
            )
        else:
            received.add(item)
    return received
