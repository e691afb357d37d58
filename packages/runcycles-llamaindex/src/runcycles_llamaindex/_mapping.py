"""Mapping LlamaIndex's callback payloads onto the plugin kit: model names, prompts and usage.
No budget logic, pricing or HTTP here (that is all in runcycles-core)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage

from runcycles_core.plugin import normalize_usage
from runcycles_core.pricing import Usage

__all__ = [
    "OPENAI_CLASSES",
    "max_output_tokens",
    "message_dicts",
    "model_name",
    "request_stream_usage",
    "response_text",
    "response_usage",
]

#: ``class_name()`` of LlamaIndex's OpenAI LLM (and its subclasses that keep it): it sends no
#: usage on streams unless ``stream_options.include_usage`` is set, and drops the option itself
#: on non-streamed requests, so it can be set on every call.
OPENAI_CLASSES = frozenset({"openai_llm", "azure_openai_llm"})


def model_name(serialized: Mapping[str, Any] | None) -> str | None:
    """The model an LLM event calls, from the event's serialized LLM: ``model_name`` (the
    LLM's metadata, in ``to_payload()``) or the ``model`` / ``model_name`` field (older cores
    serialize the fields with ``to_dict()``)."""
    for key in ("model_name", "model", "model_id", "deployment_name", "engine"):
        value = (serialized or {}).get(key)
        if isinstance(value, str) and value and value != "unknown":
            return value
    return None


def max_output_tokens(serialized: Mapping[str, Any] | None) -> int | None:
    for key in ("max_tokens", "num_output"):
        value = (serialized or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def message_dicts(messages: Sequence[object] | None) -> list[dict[str, Any]] | None:
    """What is sent to the provider, for the offline estimate (not ids or metadata)."""
    if messages is None:
        return None
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, ChatMessage):
            role = m.role.value if hasattr(m.role, "value") else str(m.role)
            out.append({"role": role, "content": m.content or ""})
        else:
            out.append({"role": "user", "content": str(m)})
    return out


def request_stream_usage(serialized: Mapping[str, Any] | None, kwargs: object) -> bool:
    """Ask LlamaIndex's OpenAI LLM for the final usage chunk of a stream.

    ``kwargs`` is the call's own keyword dict (``EventPayload.ADDITIONAL_KWARGS``), which the
    callback wrapper passes on to the LLM after the start event, so an option added here
    reaches the request. A value the caller set is kept. True if the option was added.
    """
    if (serialized or {}).get("class_name") not in OPENAI_CLASSES:
        return False
    if not isinstance(kwargs, MutableMapping) or "stream_options" in kwargs:
        return False
    kwargs["stream_options"] = {"include_usage": True}
    return True


def _get(obj: object, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _usage_of(usage: object) -> Usage | None:
    if usage is None:
        return None
    # OpenAI style (prompt/completion) or Anthropic / Responses style (input/output).
    inp = _get(usage, "prompt_tokens")
    out = _get(usage, "completion_tokens")
    if inp is None and out is None:
        inp, out = _get(usage, "input_tokens"), _get(usage, "output_tokens")
    if inp is None and out is None:
        return None
    in_details = _get(usage, "prompt_tokens_details") or _get(usage, "input_tokens_details")
    out_details = _get(usage, "completion_tokens_details") or _get(usage, "output_tokens_details")
    cache_read = _get(in_details, "cached_tokens")
    cache_write = _get(usage, "cache_creation_input_tokens")
    anthropic_read = _get(usage, "cache_read_input_tokens")
    if anthropic_read is not None:
        # Anthropic reports cache reads and writes beside input_tokens, not inside them.
        cache_read = anthropic_read
        inp = sum(v for v in (inp, anthropic_read, cache_write) if isinstance(v, int))
    return normalize_usage(
        inp,
        out,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=_get(out_details, "reasoning_tokens"),
    )


def response_usage(response: object) -> tuple[Usage | None, str | None]:
    """Usage of a ``ChatResponse`` / ``CompletionResponse`` (for a stream: its last chunk) from
    ``raw["usage"]`` / ``raw.usage``, else the token counts in ``additional_kwargs`` (the
    order of LlamaIndex's own token counter); plus the model the provider reported."""
    raw = _get(response, "raw")
    version = _get(raw, "model")
    usage = _usage_of(_get(raw, "usage"))
    if usage is None:
        extra = _get(response, "additional_kwargs")
        if isinstance(extra, Mapping) and (
            "prompt_tokens" in extra or "completion_tokens" in extra
        ):
            usage = _usage_of(extra)
    return usage, version if isinstance(version, str) and version else None


def response_text(response: object) -> str:
    """The text a (possibly partial) response holds: streamed chunks carry the text so far."""
    message = _get(response, "message")
    if message is not None:
        content = _get(message, "content")
        return content if isinstance(content, str) else ""
    text = _get(response, "text")
    return text if isinstance(text, str) else ""
