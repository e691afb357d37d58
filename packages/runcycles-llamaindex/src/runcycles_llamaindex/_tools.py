"""``CyclesTool``: gate a LlamaIndex tool's calls as action kind ``tool.<name>``.

LlamaIndex dispatches no callback (and no blocking event) around tool execution, so tools are
gated by wrapping them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llama_index.core.tools import BaseTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool, adapt_to_async_tool

from runcycles_core.plugin import (
    CyclesSettings,
    atool_guard,
    resolve_settings,
    tool_guard,
    uncancellable,
)

from ._errors import BudgetExceededError
from ._scope import current_scope

__all__ = ["CyclesTool", "cycles_tools"]


class CyclesTool(AsyncBaseTool):
    """A tool whose every call reserves its budget first (kind ``tool.<name>``, the estimate
    from ``tool_budgets``), runs the wrapped tool, then commits; a failed call is released.

    A tool with no entry in ``tool_budgets`` (and no ``"*"``) runs ungated. A denial raises
    :class:`~runcycles_llamaindex.BudgetExceededError` without running the tool. Inside an
    agent workflow LlamaIndex turns any exception a tool raises into an error ``ToolOutput``
    that the model sees (``is_error=True``; 0.14 keeps the denial on ``.exception``), so the
    run goes on: the next LLM call is then gated by the callback handler.

    Args:
        tool: any LlamaIndex tool (``FunctionTool``, ``QueryEngineTool``…).
        settings: a :class:`CyclesSettings` (e.g. ``handler.settings``), or its fields as
            keyword arguments (``tool_budgets=``, ``client=``…).
    """

    def __init__(self, tool: BaseTool, settings: CyclesSettings | None = None, **fields: Any):
        self.tool = adapt_to_async_tool(tool)
        self.settings = resolve_settings(settings, fields, denial_error=BudgetExceededError)

    @property
    def metadata(self) -> ToolMetadata:
        return self.tool.metadata

    @property
    def name(self) -> str:
        return self.tool.metadata.get_name()

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        scope = current_scope()
        guard = tool_guard(self.settings, self.name, subject=scope.subject)
        if guard is None:
            return self.tool.call(*args, **kwargs)
        guard.reserve()
        try:
            output = self.tool.call(*args, **kwargs)
        except BaseException as exc:
            guard.finish(exc)
            raise
        guard.commit()
        return output

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        scope = current_scope()
        guard = atool_guard(self.settings, self.name, subject=scope.subject)
        if guard is None:
            return await self.tool.acall(*args, **kwargs)
        await guard.reserve()
        try:
            output = await self.tool.acall(*args, **kwargs)
        except BaseException as exc:
            # Settled before a cancellation reaches the caller.
            await uncancellable(guard.finish(exc))
            raise
        await uncancellable(guard.commit())
        return output


def cycles_tools(
    tools: Iterable[BaseTool], settings: CyclesSettings | None = None, **fields: Any
) -> list[CyclesTool]:
    """Wrap every tool of ``tools`` in a :class:`CyclesTool` sharing one settings object."""
    resolved = resolve_settings(settings, fields, denial_error=BudgetExceededError)
    return [t if isinstance(t, CyclesTool) else CyclesTool(t, resolved) for t in tools]
