"""AutoGen's model-call types mapped onto the kit: the prompt to count, the output received,
the usage reported, and which model a client calls."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import ChatCompletionClient, CreateResult, FunctionExecutionResult

from runcycles_core.plugin import Received, normalize_usage
from runcycles_core.pricing import Usage

__all__ = ["max_output_tokens", "model_of", "prompt_of", "provider_of", "received_of", "usage_of"]


def _part(part: object) -> object:
    if isinstance(part, str):
        return part
    if isinstance(part, FunctionCall):
        return {"name": part.name, "arguments": part.arguments}
    if isinstance(part, FunctionExecutionResult):
        return {"name": part.name, "content": part.content}
    # Images: providers bill them per image and size, not as text; counting their base64
    # payload as text would overcharge by orders of magnitude.
    return ""


def _message(message: object) -> dict[str, object]:
    content = getattr(message, "content", "")
    return {
        "role": str(getattr(message, "type", "")),
        "name": str(getattr(message, "source", "") or ""),
        "content": [_part(p) for p in content] if isinstance(content, list) else _part(content),
        "thought": str(getattr(message, "thought", "") or ""),
    }


def _schema(tool: object) -> str:
    # A Tool has .schema; a ToolSchema is the mapping itself. Providers bill the JSON.
    schema = getattr(tool, "schema", tool)
    return json.dumps(schema, default=str, sort_keys=True)


def prompt_of(messages: Sequence[object], tools: Sequence[object]) -> list[object]:
    """What the provider is sent, as plain messages the kit can count offline: every
    message's text, function calls and results, and the tool schemas."""
    prompt: list[object] = [_message(m) for m in messages]
    if tools:
        prompt.append({"role": "tools", "content": [_schema(t) for t in tools]})
    return prompt


def usage_of(result: CreateResult) -> Usage | None:
    """``CreateResult.usage`` as core's Usage; None when the provider reported none (AutoGen
    fills 0/0, e.g. an OpenAI stream without ``include_usage``). ``RequestUsage`` has no cache
    or reasoning split, so none is priced."""
    usage = result.usage
    return normalize_usage(
        getattr(usage, "prompt_tokens", 0), getattr(usage, "completion_tokens", 0)
    )


def received_of(result: CreateResult, received: Received | None = None) -> Received:
    """What a finished call returned, as the kit's :class:`Received` (``received``, the
    streamed chunks, if any were seen; else the result's text, thought and function calls)."""
    if received:
        return received
    out = Received()
    if result.thought:
        out.add(result.thought)
    if isinstance(result.content, str):
        if result.content:
            out.add(result.content)
    else:
        for call in result.content:
            out.add(_part(call))
    return out


def _config(client: object) -> Mapping[str, Any]:
    # autogen-ext's clients keep their create arguments (model, max_tokens…) here.
    for name in ("_create_args", "_raw_config"):
        found = getattr(client, name, None)
        if isinstance(found, Mapping) and found.get("model"):
            return found
    # Any serializable client: its public component config.
    dump = getattr(client, "dump_component", None)
    if callable(dump):
        with contextlib.suppress(Exception):
            config = dump().config
            if isinstance(config, Mapping):
                return config
    return {}


def model_of(client: ChatCompletionClient) -> str | None:
    """The model ``client`` calls, from its configuration."""
    model = _config(client).get("model") or getattr(client, "model", None)
    return model if isinstance(model, str) and model else None


def provider_of(client: ChatCompletionClient) -> str | None:
    """The provider to price with, for autogen-ext's own clients (None: by model name)."""
    module = type(client).__module__
    name = type(client).__name__
    if module.startswith("autogen_ext.models.openai"):
        return "azure" if name.startswith("Azure") else "openai"
    if module.startswith("autogen_ext.models.anthropic"):
        return "anthropic"
    return None


def max_output_tokens(source: Mapping[str, Any] | ChatCompletionClient) -> int | None:
    """The output cap in ``source`` (a call's ``extra_create_args``, or a client's
    configuration), if one is set: it tightens the estimate."""
    found = source if isinstance(source, Mapping) else _config(source)
    for key in ("max_tokens", "max_completion_tokens"):
        value = found.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
