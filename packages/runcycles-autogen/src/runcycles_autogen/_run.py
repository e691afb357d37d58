"""Running an agent or a team so that the plugin's typed errors reach the caller and no model
stream is left open, and a budgeted ``SelectorGroupChat``."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from autogen_agentchat.base import ChatAgent, TaskResult, TaskRunner, Team
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core.models import ChatCompletionClient

from runcycles_core.plugin import CyclesSettings

from ._client import CyclesChatCompletionClient
from ._scope import cycles_run

__all__ = ["run_team", "run_team_stream", "selector_group_chat"]

Task = str | BaseChatMessage | Sequence[BaseChatMessage] | None


async def run_team(
    runner: TaskRunner,
    *,
    task: Task = None,
    subject: Mapping[str, str | None] | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **run_kwargs: Any,
) -> TaskResult:
    """``await runner.run(task=task, **run_kwargs)`` inside :func:`~runcycles_autogen.cycles_run`.

    ``runner`` is a team (``RoundRobinGroupChat``, ``SelectorGroupChat``…) or an agent. A budget
    denial inside a team reaches the caller as :class:`~runcycles_autogen.BudgetExceededError`
    (AutoGen's ``RuntimeError`` is its ``__cause__``); ``subject`` / ``dimensions`` /
    ``metadata`` apply to every model and tool call of the run.
    """
    async with cycles_run(subject=subject, dimensions=dimensions, metadata=metadata):
        return await runner.run(task=task, **run_kwargs)


async def run_team_stream(
    runner: TaskRunner,
    *,
    task: Task = None,
    subject: Mapping[str, str | None] | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **run_kwargs: Any,
) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | TaskResult, None]:
    """``runner.run_stream(...)`` as :func:`run_team` runs ``run``; when the consumer stops
    early (``break`` then ``aclose()``, or ``contextlib.aclosing``), the model streams the run
    left open are closed and settled as stopped at once, not at garbage collection."""
    async with cycles_run(subject=subject, dimensions=dimensions, metadata=metadata):
        stream = runner.run_stream(task=task, **run_kwargs)
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()


def selector_group_chat(
    participants: Sequence[ChatAgent | Team],
    model_client: ChatCompletionClient,
    *,
    settings: CyclesSettings | None = None,
    model: str | None = None,
    provider: str | None = None,
    **team_kwargs: Any,
) -> SelectorGroupChat:
    """A ``SelectorGroupChat`` whose speaker-selection calls are budgeted too.

    The selector's ``model_client`` makes one model call per turn, outside any agent; it is
    wrapped in a :class:`CyclesChatCompletionClient` (unless it already is one) with
    ``settings`` (default: those of ``model_client`` if wrapped, else ``CYCLES_*``), its calls
    tagged ``autogen_role=selector`` in the reservation metadata. ``team_kwargs`` go to
    ``SelectorGroupChat`` (``termination_condition=``, ``selector_prompt=``…). The participants'
    own clients must be wrapped by the caller.
    """
    if not isinstance(model_client, CyclesChatCompletionClient):
        base = settings or CyclesSettings()
        tagged = dataclasses.replace(
            base, metadata={**(base.metadata or {}), "autogen_role": "selector"}
        )
        model_client = CyclesChatCompletionClient(
            model_client, settings=tagged, model=model, provider=provider
        )
    return SelectorGroupChat(list(participants), model_client=model_client, **team_kwargs)
