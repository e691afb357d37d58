"""The shared plugin contract suite on a one-agent crew whose LLM is a :class:`CyclesLLM`
(tools gated by :func:`cycles_crew`), driven through ``Crew.akickoff`` / ``Crew.kickoff``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from crewai import Agent, Crew, Task
from crewai.tools import BaseTool
from runcycles_crewai import CrewBudgetExceeded, CyclesLLM, cycles_crew

from runcycles_core.plugin import CyclesSettings
from runcycles_testing import FakeSpec, Harness, PluginAdapter
from runcycles_testing.contract import ContractSuite

from .fake import Counters, FakeLLM, fake_llm


def counting_tool(name: str, counters: Counters) -> BaseTool:
    class _Tool(BaseTool):
        def _run(self, **kwargs: Any) -> str:
            counters.tool()
            return "42"

    return _Tool(name=name, description="Returns the answer.")


class CrewHarness(Harness):
    def __init__(self, settings: CyclesSettings, fake: FakeSpec) -> None:
        self.settings = settings
        self.fake = fake
        self.counters = Counters()
        self.fakes: list[FakeLLM] = []

    @property
    def provider_calls(self) -> int:
        return self.counters.provider_calls

    @property
    def tool_calls(self) -> int:
        return self.counters.tool_runs

    def crew(self, *, stream: bool = False, retries: int = 0) -> Crew:
        inner = fake_llm(self.fake, self.counters, stream=stream)
        self.fakes.append(inner)
        llm = CyclesLLM(inner, self.settings)
        tools = [counting_tool(self.fake.tool, self.counters)] if self.fake.tool else []
        agent = Agent(
            role="r",
            goal="answer",
            backstory="b",
            llm=llm,
            tools=tools,
            max_iter=4,
            max_retry_limit=retries,
            verbose=False,
        )
        task = Task(description="What is six times seven?", expected_output="a number", agent=agent)
        return Crew(agents=[agent], tasks=[task], verbose=False, stream=stream)

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        crew = self.crew()
        with cycles_crew(crew, self.settings, subject=subject, dimensions=dimensions):
            out = await crew.akickoff()
        return str(getattr(out, "raw", out))

    async def stream(self, *, stop_after: int | None = None) -> int:
        def consume() -> int:
            crew = self.crew(stream=True)
            with cycles_crew(crew, self.settings):
                streaming: Any = crew.kickoff()
                chunks = 0
                for chunk in streaming:
                    if getattr(chunk, "content", None):
                        chunks += 1
                        if stop_after is not None and chunks >= stop_after:
                            break
                if stop_after is None:
                    streaming.result  # noqa: B018 - re-raises the run's error, if any
                else:
                    _drain(streaming)
            return chunks

        return await asyncio.to_thread(consume)

    async def aclose(self) -> None:
        for inner in self.fakes:
            inner.release_hang()  # a hung call's worker thread ends, released

    async def retry_same_identity(self) -> None:
        # The agent's own retry policy re-runs the failed LLM step (max_retry_limit=1).
        crew = self.crew(retries=1)
        first = True
        inner = crew.agents[0].llm.inner  # type: ignore[union-attr]
        original = type(inner)._run

        def flaky(this: Any, messages: Any, from_task: Any, from_agent: Any) -> str:
            nonlocal first
            if first:
                first = False
                this.counters.provider()
                from runcycles_testing import ProviderError

                raise ProviderError("transient")
            return str(original(this, messages, from_task, from_agent))

        object.__setattr__(inner, "_run", flaky.__get__(inner))
        with cycles_crew(crew, self.settings):
            await crew.akickoff()


def _drain(streaming: Any) -> None:
    # A consumer that stops early still lets the run finish in the background; wait for it
    # the way an app's shutdown would, so the ledger is read after the call settled.
    for _ in streaming:
        pass


class CrewAdapter(PluginAdapter):
    denial_error = CrewBudgetExceeded
    fake_features: ClassVar[frozenset[str]] = frozenset({"report_usage"})
    unsupported: ClassVar[Mapping[str, str]] = {
        "stream_early_stop": (
            "a CrewAI stream is fed by the event bus while the LLM call runs to completion on "
            "its own thread; a consumer that stops iterating does not stop the call, so the "
            "call completes and its reported usage is committed (priced_usage), never a "
            "stopped-early partial"
        ),
        "cancellation": (
            "Crew.akickoff runs each LLM call through the synchronous BaseLLM.call on a worker "
            "thread, so cancelling the awaiting task never reaches the call: it keeps running "
            "and CyclesLLM settles it when it returns, after the CancelledError reached the "
            "caller (test_crew.py checks it is released then)"
        ),
    }

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return CrewHarness(settings, fake)


class TestContract(ContractSuite):
    adapter = CrewAdapter()
