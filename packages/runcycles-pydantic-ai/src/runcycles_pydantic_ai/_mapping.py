"""Mapping Pydantic AI's messages, models and usage onto the plugin kit. No budget logic,
pricing or HTTP here (that is all in runcycles-core)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
)

from runcycles_core.plugin import Received, normalize_usage
from runcycles_core.pricing import Usage

__all__ = [
    "INCOMPLETE_STATES",
    "IN_PROCESS_SYSTEMS",
    "message_dicts",
    "price_provider",
    "received_of",
    "response_usage",
]

#: ``Model.system`` of Pydantic AI's in-process models: no provider to price them with.
IN_PROCESS_SYSTEMS = frozenset({"function", "test"})

#: ``ModelResponse.state`` of a streamed response that ended before the model finished (the
#: consumer stopped it, or it was cancelled); absent before 2.x, where a stopped stream is
#: drained to its end.
INCOMPLETE_STATES = frozenset({"incomplete", "interrupted"})


def price_provider(system: object) -> str | None:
    """The provider id to price with, from a model's ``system`` / a response's
    ``provider_name`` (``openai``, ``anthropic``…), or None for in-process models."""
    if not isinstance(system, str) or not system or system in IN_PROCESS_SYSTEMS:
        return None
    return system


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return " ".join(c if isinstance(c, str) else "" for c in content)
    return "" if content is None else str(content)


def _part_content(part: object) -> str:
    if isinstance(part, ToolCallPart):
        return f"{part.tool_name}({part.args_as_json_str()})"
    content = getattr(part, "content", None)
    if content is None:
        return ""
    if isinstance(content, (str, list, tuple)):
        return _text(content)
    try:
        return json.dumps(content, default=str)
    except (TypeError, ValueError):
        return str(content)


def message_dicts(
    messages: Sequence[ModelMessage], instructions: str | None = None
) -> list[dict[str, Any]]:
    """What a request sends (instructions, prompts, tool calls and returns), for the offline
    estimate and the offline count of a call without usage."""
    out: list[dict[str, Any]] = []
    if instructions:
        out.append({"role": "system", "content": instructions})
    for m in messages:
        role = "user" if isinstance(m, ModelRequest) else "assistant"
        for part in m.parts:
            kind = getattr(part, "part_kind", "")
            if kind == "system-prompt":
                out.append({"role": "system", "content": _part_content(part)})
            elif kind in ("tool-return", "retry-prompt"):
                out.append({"role": "tool", "content": _part_content(part)})
            else:
                text = _part_content(part)
                if text:
                    out.append({"role": role, "content": text})
    return out


def _reasoning(usage: object) -> object:
    # A field from 2.x; 1.x keeps the provider's count in ``details``.
    found = getattr(usage, "output_reasoning_tokens", None)
    if found is None:
        details = getattr(usage, "details", None) or {}
        found = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return found


def response_usage(response: ModelResponse) -> Usage | None:
    """The provider's usage on ``response`` (Pydantic AI's ``RequestUsage``: input includes cache
    reads and writes, output includes reasoning, as core counts), or None when the provider
    omitted it (``unmeasured_requests`` from 2.63, or no tokens at all)."""
    usage = response.usage
    if getattr(usage, "unmeasured_requests", 0):
        return None
    return normalize_usage(
        usage.input_tokens,
        usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=_reasoning(usage),
    )


def received_of(response: ModelResponse | None, received: Received | None = None) -> Received:
    """What ``response`` (possibly partial) delivered: its text and each tool call."""
    received = Received() if received is None else received
    if response is None:
        return received
    for part in response.parts:
        if isinstance(part, TextPart):
            if part.content:
                received.add(part.content)
        elif isinstance(part, ToolCallPart):
            received.add({"role": "assistant", "content": _part_content(part)})
    return received
