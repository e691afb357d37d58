"""Mapping LangChain's run data onto the plugin kit: settings, model names, usage, subjects and
idempotency keys. No budget logic, pricing or HTTP here (that is all in runcycles-core)."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from runcycles_core.plugin import LEVELS, Received, normalize_usage
from runcycles_core.pricing import Usage

__all__ = [
    "StepKeys",
    "add_token",
    "message_usage",
    "model_name",
    "received_from_messages",
    "pricing_provider",
    "result_usage",
    "run_overrides",
]

#: LangChain's ``ls_provider`` values → genai-prices provider ids (others: match by model only).
_PROVIDERS = {
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "anthropic": "anthropic",
    "google_genai": "google",
    "google_vertexai": "google",
    "google_anthropic_vertex": "anthropic",
    "bedrock": "aws",
    "amazon_bedrock": "aws",
    "bedrock_converse": "aws",
    "groq": "groq",
    "mistral": "mistral",
    "mistralai": "mistral",
    "deepseek": "deepseek",
    "xai": "x-ai",
    "fireworks": "fireworks",
    "together": "together",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
}

#: Per-run metadata keys (``config={"metadata": {...}}``) that override the subject.
SUBJECT_PREFIX = "cycles_"
DIMENSIONS_KEY = "cycles_dimensions"


def pricing_provider(ls_provider: object) -> str | None:
    return _PROVIDERS.get(ls_provider) if isinstance(ls_provider, str) else None


def model_name(
    metadata: Mapping[str, Any] | None,
    serialized: Mapping[str, Any] | None,
    invocation_params: Mapping[str, Any] | None,
) -> str | None:
    """The model a run calls: ``ls_model_name`` (what LangChain reports to tracing), else the
    invocation parameters or the serialized constructor kwargs."""
    name = (metadata or {}).get("ls_model_name")
    if isinstance(name, str) and name:
        return name
    for source in (invocation_params or {}, (serialized or {}).get("kwargs") or {}):
        for key in ("model", "model_name", "model_id", "deployment_name"):
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def max_tokens(metadata: Mapping[str, Any] | None, params: Mapping[str, Any] | None) -> int | None:
    for source, key in (
        (metadata or {}, "ls_max_tokens"),
        (params or {}, "max_tokens"),
        (params or {}, "max_completion_tokens"),
        (params or {}, "max_output_tokens"),
    ):
        value = source.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def message_usage(message: object) -> Usage | None:
    """Core :class:`Usage` from an ``AIMessage.usage_metadata`` (None if it has none).

    LangChain's ``input_tokens`` already include cache reads and writes and ``output_tokens``
    include reasoning, which is core's convention too; the details are clamped so that an
    inconsistent report still prices instead of failing.
    """
    meta = getattr(message, "usage_metadata", None)
    if not meta:
        return None
    ind = meta.get("input_token_details") or {}
    outd = meta.get("output_token_details") or {}
    return normalize_usage(
        meta.get("input_tokens"),
        meta.get("output_tokens"),
        cache_read_tokens=ind.get("cache_read"),
        cache_write_tokens=ind.get("cache_creation"),
        reasoning_tokens=outd.get("reasoning"),
    )


def result_usage(response: LLMResult) -> tuple[Usage | None, str | None]:
    """Usage summed over every generation of an ``on_llm_end`` result (``n > 1`` pays for each),
    falling back to the legacy ``llm_output["token_usage"]``; plus the provider's model name."""
    total: Usage | None = None
    version: str | None = None
    for generations in response.generations:
        for gen in generations:
            msg = getattr(gen, "message", None)
            if msg is None:
                continue
            rm = getattr(msg, "response_metadata", None) or {}
            version = version or rm.get("model_name") or rm.get("model")
            u = message_usage(msg)
            if u is not None:
                total = u if total is None else _add(total, u)
    if total is None and response.llm_output:
        tu = response.llm_output.get("token_usage") or response.llm_output.get("usage") or {}
        if tu:
            total = normalize_usage(
                tu.get("prompt_tokens", tu.get("input_tokens")),
                tu.get("completion_tokens", tu.get("output_tokens")),
            )
        version = version or response.llm_output.get("model_name")
    return total, version if isinstance(version, str) else None


def messages_usage(messages: Iterable[BaseMessage]) -> Usage | None:
    total: Usage | None = None
    for m in messages:
        u = message_usage(m)
        if u is not None:
            total = u if total is None else _add(total, u)
    return total


def add_token(received: Received, token: object, chunk: object) -> bool:
    """Record one ``on_llm_new_token`` in ``received``; True if it was content (text, or a tool
    call's fragment). An empty token is the usage / finish chunk and is not counted."""
    msg = getattr(chunk, "message", None)
    fragments = getattr(msg, "tool_call_chunks", None)
    if isinstance(token, str) and token:
        received.add(token)
    elif fragments:
        received.add({"tool_call_chunks": repr(fragments)})
    else:
        return False
    return True


def received_from_messages(messages: Iterable[BaseMessage]) -> Received:
    """A final answer as the kit's :class:`Received`: its text and its tool calls (counted
    offline when the provider reported no usage)."""
    received = Received()
    for m in messages:
        text = m.content if isinstance(m.content, str) else str(m.content)
        if text:
            received.add(text)
        for t in getattr(m, "tool_calls", None) or []:
            received.add({"name": t["name"], "args": t["args"]})
    return received


def run_overrides(
    metadata: Mapping[str, Any] | None,
) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """Per-run subject levels (``cycles_agent``, ``cycles_workflow``…) and dimensions
    (``cycles_dimensions``) from a run's metadata, which LangChain propagates to child runs."""
    meta = metadata or {}
    subject = {
        level: str(meta[f"{SUBJECT_PREFIX}{level}"])
        for level in LEVELS
        if level != "tenant" and meta.get(f"{SUBJECT_PREFIX}{level}")
    }
    dims = meta.get(DIMENSIONS_KEY)
    dimensions = {str(k): str(v) for k, v in dims.items()} if isinstance(dims, Mapping) else None
    return subject or None, dimensions or None


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
    )


class StepKeys:
    """Idempotency keys that survive LangGraph retries and resumes.

    Inside a LangGraph task with a checkpointer, a call's base key is
    ``lg:<thread_id>:<checkpoint_ns>:<kind>:<n>``: ``checkpoint_ns`` ends in the task id, which
    LangGraph derives from the checkpoint, so a retried task (``RetryPolicy``) or a task re-run
    on resume from the same checkpoint gets the same ids; ``n`` numbers the calls of one attempt
    (reset when the task's next attempt starts). Outside LangGraph the key is the run's own
    ``run_id`` (stable if the caller passes ``run_id`` in the config).

    The plugin reserves with :func:`runcycles_core.plugin.reserve_model_step`, which turns
    a repeated key into "already paid" (the earlier attempt committed) or a fresh reservation
    (the earlier attempt released or expired).
    """

    _MAX = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq: OrderedDict[tuple[str, ...], int] = OrderedDict()

    @staticmethod
    def task(metadata: Mapping[str, Any] | None) -> tuple[str, str] | None:
        meta = metadata or {}
        thread = meta.get("thread_id")
        ns = meta.get("langgraph_checkpoint_ns") or meta.get("checkpoint_ns")
        if thread is None or not ns:
            return None
        return str(thread), str(ns)

    def new_attempt(self, scope: tuple[str, ...]) -> None:
        """A task (or an attempt of it) starts: number its calls from 0 again."""
        with self._lock:
            self._seq.pop(scope, None)
            self._seq[scope] = 0
            self._trim(self._seq)

    def key(
        self,
        metadata: Mapping[str, Any] | None,
        kind: str,
        *,
        run_id: uuid.UUID | None = None,
        attempt: str | None = None,
    ) -> str:
        task = self.task(metadata)
        if task is None:
            base = f"lc:{run_id or uuid.uuid4()}"
        else:
            scope = (*task, attempt) if attempt is not None else task
            with self._lock:
                n = self._seq.get(scope, 0)
                self._seq[scope] = n + 1
                self._seq.move_to_end(scope)
                self._trim(self._seq)
            base = f"lg:{task[0]}:{task[1]}:{kind}:{n}"
        return base

    def _trim(self, d: OrderedDict[Any, int]) -> None:
        while len(d) > self._MAX:
            d.popitem(last=False)
