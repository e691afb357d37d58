"""``CyclesWorkbench``: gate an AutoGen workbench's tool calls as action kind ``tool.<name>``.

A Workbench must never raise from ``call_tool``: ``AssistantAgent`` runs tool calls in a task
that signals the end of its results only on success, so a raising workbench leaves the agent
waiting forever (autogen-agentchat 0.6 and 0.7). A denied (or failed) tool call therefore
returns an error ``ToolResult`` the model reads, and the denial is handed to the next model
call, which raises it instead of reserving.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_core import CancellationToken
from autogen_core.tools import (
    BaseTool,
    StaticWorkbench,
    TextResultContent,
    ToolResult,
    ToolSchema,
    Workbench,
)

from runcycles_core.errors import BudgetExceededError as CoreBudgetExceededError
from runcycles_core.lifecycle import AsyncGuard
from runcycles_core.plugin import (
    CyclesSettings,
    areserve_uncancellable,
    atool_guard,
    resolve_settings,
    uncancellable,
)

from ._client import CyclesChatCompletionClient
from ._errors import BudgetExceededError
from ._scope import current_run, record_error

__all__ = ["CyclesWorkbench"]


def _error_result(name: str, text: str) -> ToolResult:
    return ToolResult(name=name, result=[TextResultContent(content=text)], is_error=True)


class CyclesWorkbench(Workbench):
    """A workbench whose every budgeted tool call reserves first (kind ``tool.<name>``, the
    estimate from ``tool_budgets``), runs the inner workbench's tool, then commits; a tool
    that fails (an error result) is released. A tool with no entry in ``tool_budgets`` (and
    no ``"*"``) runs ungated.

    A denied tool is not run: the model gets an error result saying so, and the next model
    call raises the :class:`~runcycles_autogen.BudgetExceededError` (the next call of
    ``model_client``, and of every client inside the same :func:`~runcycles_autogen.cycles_run`).

    Args:
        inner: the workbench to gate, or a list of tools (gated in a ``StaticWorkbench``).
        model_client: the agent's :class:`CyclesChatCompletionClient`: its next call raises a
            tool denial. Without ``settings``, its settings are used, with the fields given
            as keywords here replaced (``tool_budgets={"search": 50_000, "*": 1_000}``…).
        settings: a :class:`~runcycles_core.plugin.CyclesSettings`, or its fields as keywords.

    Use it as the agent's workbench::

        agent = AssistantAgent("a", model_client=client, workbench=CyclesWorkbench([search],
                               model_client=client), reflect_on_tool_use=True)
    """

    def __init__(
        self,
        inner: Workbench | Sequence[BaseTool[Any, Any]],
        *,
        model_client: CyclesChatCompletionClient | None = None,
        settings: CyclesSettings | None = None,
        **settings_kwargs: Any,
    ) -> None:
        self.inner = inner if isinstance(inner, Workbench) else StaticWorkbench(list(inner))
        self.model_client = model_client
        if settings is None and model_client is not None:
            # The agent's client's settings, with any fields given here (tool_budgets=…).
            settings = dataclasses.replace(model_client.settings, **settings_kwargs)
            settings_kwargs = {}
        self._settings = resolve_settings(
            settings, settings_kwargs, denial_error=BudgetExceededError
        )
        self.last_error: BaseException | None = None
        """The last error that kept a tool from running (a denial…)."""

    @property
    def settings(self) -> CyclesSettings:
        """The settings tool calls are reserved with."""
        return self._settings

    def _refuse(self, name: str, error: Exception) -> ToolResult:
        self.last_error = error
        record_error(error)
        run = current_run()
        if run is not None:
            run.defer(error)
        if self.model_client is not None:
            self.model_client.defer(error)
        if isinstance(error, CoreBudgetExceededError):
            why = f"budget denied ({error.error_code})"
        else:
            why = f"budget check failed ({type(error).__name__})"
        return _error_result(name, f"Tool {name} was not run: {why}.")

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Reserve, run the inner workbench's tool, commit; never raises (see the module)."""
        run = current_run()
        guard: AsyncGuard | None
        try:
            guard = atool_guard(self._settings, name, subject=run.subject if run else None)
            if guard is not None:
                await areserve_uncancellable(guard.reserve())
        except Exception as exc:
            return self._refuse(name, exc)
        try:
            result = await self.inner.call_tool(name, arguments, cancellation_token, call_id)
        except Exception as exc:
            if guard is not None:
                await uncancellable(guard.release(f"tool_failed: {type(exc).__name__}"))
            return _error_result(name, f"Tool {name} failed: {exc}")
        except BaseException as exc:
            if guard is not None:
                await uncancellable(guard.finish(exc))
            raise
        if guard is not None:
            if result.is_error:
                await uncancellable(guard.release("tool_returned_error"))
            else:
                await uncancellable(guard.commit())
        return result

    async def list_tools(self) -> list[ToolSchema]:
        return list(await self.inner.list_tools())

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def reset(self) -> None:
        await self.inner.reset()

    async def save_state(self) -> Mapping[str, Any]:
        return await self.inner.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self.inner.load_state(state)
