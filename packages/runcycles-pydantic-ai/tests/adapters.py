"""Contract-suite adapters on the scripted model, wired through :class:`CyclesCapability`, three
ways: ``agent.run`` (async), ``agent.run_sync`` (in a worker thread) and agent iteration
(``agent.iter``, with every model request streamed through ``node.stream``); streams go through
``agent.run_stream``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from importlib.metadata import version
from typing import ClassVar

from packaging.version import Version
from pydantic_ai import Agent
from pydantic_ai.capabilities import AbstractCapability
from runcycles_pydantic_ai import BudgetExceededError, CyclesCapability, cycles_metadata

from runcycles_core.plugin import CyclesSettings
from runcycles_testing import FakeSpec, Harness, PluginAdapter

from .fakes import ScriptedModel

PROMPT = "What is six times seven?"

PAI = Version(version("pydantic-ai-slim"))

NO_STEP_IDENTITY = (
    "Pydantic AI re-runs no model request under the same identity outside durable execution "
    "(Temporal, DBOS, Prefect): a ModelRetry or a new run is a new request, charged as one"
)
DRAINS_STOPPED_STREAM = (
    "pydantic-ai-slim < 2 drains a stream its consumer stopped to the end (the provider's final "
    "usage arrives and is committed as priced usage): there is no early stop to count"
)
STREAM_ERROR_IS_A_CANCEL = (
    "pydantic-ai-slim < 2.63 has no get_wrapper_model: a stream's error goes to its consumer, "
    "the model-request hook is cancelled and no hook sees the chunks or the partial response, "
    "so a stream that raised is settled as one that raised before any output (released)"
)
SYNC_CANCEL = (
    "run_sync() running on a worker thread cannot be cancelled from outside; cancellation is "
    "covered by the async adapters"
)


class AgentHarness(Harness):
    def __init__(self, settings: CyclesSettings, fake: FakeSpec, *, mode: str = "run") -> None:
        self.mode = mode
        self.model = ScriptedModel(fake)
        self.capability = CyclesCapability(settings)
        self.agent: Agent[None, str] = Agent(self.model, capabilities=[self.capability])
        self._tool_runs = 0
        self._lock = threading.Lock()
        if fake.tool:

            def lookup() -> str:
                """Looks the answer up."""
                with self._lock:
                    self._tool_runs += 1
                return "42"

            self.agent.tool_plain(name=fake.tool)(lookup)

    @property
    def provider_calls(self) -> int:
        return self.model.calls

    @property
    def tool_calls(self) -> int:
        return self._tool_runs

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        metadata = cycles_metadata(subject=subject, dimensions=dimensions)
        if self.mode == "sync":
            result = await asyncio.to_thread(self.agent.run_sync, PROMPT, metadata=metadata)
            return result.output
        if self.mode == "iter":
            async with self.agent.iter(PROMPT, metadata=metadata) as run:
                async for node in run:
                    if Agent.is_model_request_node(node):
                        async with node.stream(run.ctx) as stream:
                            async for _ in stream:
                                pass
            assert run.result is not None
            return run.result.output
        return (await self.agent.run(PROMPT, metadata=metadata)).output

    async def stream(self, *, stop_after: int | None = None) -> int:
        seen = 0
        async with self.agent.run_stream(PROMPT) as result:
            async for delta in result.stream_text(delta=True, debounce_by=None):
                seen += bool(delta)
                if stop_after is not None and seen >= stop_after:
                    break
        return seen

    async def retry_same_identity(self) -> None:
        raise AssertionError("declared unsupported")


FEATURES = frozenset({"report_usage", "fail_after"})


def _unsupported(**extra: str) -> dict[str, str]:
    found = {
        "retry_same_identity": NO_STEP_IDENTITY,
        **extra,
    }
    if not hasattr(AbstractCapability, "get_wrapper_model"):
        found["settle_raise_after_partial"] = STREAM_ERROR_IS_A_CANCEL
    if Version("2") > PAI:
        found["stream_early_stop"] = DRAINS_STOPPED_STREAM
    return found


class RunAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    fake_features = FEATURES
    unsupported: ClassVar[Mapping[str, str]] = _unsupported()

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return AgentHarness(settings, fake)


class SyncAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    fake_features = FEATURES
    unsupported: ClassVar[Mapping[str, str]] = _unsupported(cancellation=SYNC_CANCEL)

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return AgentHarness(settings, fake, mode="sync")


class IterAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    fake_features = FEATURES
    unsupported: ClassVar[Mapping[str, str]] = _unsupported()

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return AgentHarness(settings, fake, mode="iter")
