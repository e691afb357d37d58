"""Contract-suite adapters: LangChain agents on the fake provider, wired through the plugin by
callback handler or by middleware, driven through the sync or the async API."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, ClassVar, cast

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver

from runcycles_core.plugin import CyclesSettings
from runcycles_langchain import BudgetExceededError, CyclesCallbackHandler, CyclesMiddleware
from runcycles_testing import FakeSpec, Harness, PluginAdapter

from .fakes import ScriptedChatModel

PROMPT = "What is six times seven?"

SYNC_CANCEL = (
    "a sync invoke() running on a worker thread cannot be cancelled from outside; "
    "cancellation is covered by the async adapters"
)
AGENT_STREAM_STOP = (
    "the agent's messages stream is fed by the model node: with the fake model the model call "
    "runs to completion (usage reported and priced) before the consumer's break reaches it, "
    "so the model is never stopped early; the handler adapters cover this rule"
)


class TransientError(RuntimeError):
    """Raised once by :class:`FailOnce` after the model answered."""


class FailOnce(AgentMiddleware):
    """Fails the model step once *after* the model answered (a crash between the provider call
    and the checkpoint): the step is then re-run on resume under the same task id."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def _maybe_fail(self) -> None:
        if not self.failed:
            self.failed = True
            raise TransientError("crashed after the model call")

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        response = handler(request)
        self._maybe_fail()
        return response

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        response = await handler(request)
        self._maybe_fail()
        return response


class LangChainHarness(Harness):
    def __init__(
        self, settings: CyclesSettings, fake: FakeSpec, *, sync: bool, middleware: bool
    ) -> None:
        self.fake = fake
        self.sync = sync
        self.model = ScriptedChatModel.from_spec(fake)
        self._tool_runs = 0
        self._lock = threading.Lock()
        self.tools = [self._tool(fake.tool)] if fake.tool else []
        if middleware:
            self.plugin: list[Any] = [CyclesMiddleware(settings)]
            self.callbacks: list[Any] = []
        else:
            self.plugin = []
            self.callbacks = [CyclesCallbackHandler(settings)]

    def _tool(self, name: str) -> StructuredTool:
        def body() -> str:
            with self._lock:
                self._tool_runs += 1
            return "42"

        async def abody() -> str:
            return body()

        return StructuredTool.from_function(
            func=body, coroutine=abody, name=name, description="Looks the answer up."
        )

    @property
    def provider_calls(self) -> int:
        return self.model.calls

    @property
    def tool_calls(self) -> int:
        return self._tool_runs

    def _agent(self, *extra: AgentMiddleware, checkpointer: Any = None) -> Any:
        return create_agent(
            self.model,
            tools=self.tools,
            middleware=[*extra, *self.plugin],
            checkpointer=checkpointer,
        )

    def _config(
        self,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
        thread: str | None = None,
    ) -> RunnableConfig:
        metadata: dict[str, Any] = {f"cycles_{k}": v for k, v in (subject or {}).items()}
        if dimensions:
            metadata["cycles_dimensions"] = dict(dimensions)
        config: RunnableConfig = {"callbacks": self.callbacks, "metadata": metadata}
        if thread:
            config["configurable"] = {"thread_id": thread}
        return config

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.sync:
            return await asyncio.to_thread(fn, *args)
        return await fn(*args)

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        agent = self._agent()
        inputs = {"messages": [HumanMessage(PROMPT)]}
        config = self._config(subject, dimensions)
        call = agent.invoke if self.sync else agent.ainvoke
        result = await self._call(call, inputs, config)
        return str(result["messages"][-1].content)

    async def stream(self, *, stop_after: int | None = None) -> int:
        if self.plugin:
            return await self._stream_agent(stop_after)
        return await self._stream_model(stop_after)

    async def _stream_model(self, stop_after: int | None) -> int:
        # The callback handler sees the model's own stream (model.stream / astream).
        config = self._config()
        if self.sync:

            def consume() -> int:
                seen = 0
                for chunk in self.model.stream(PROMPT, config):
                    seen += bool(chunk.content)
                    if stop_after is not None and seen >= stop_after:
                        break  # the generator is closed here: GeneratorExit in the model run
                return seen

            return await asyncio.to_thread(consume)
        seen = 0
        stream = cast("AsyncGenerator[AIMessageChunk, None]", self.model.astream(PROMPT, config))
        try:
            async for chunk in stream:
                seen += bool(chunk.content)
                if stop_after is not None and seen >= stop_after:
                    break
        finally:
            await stream.aclose()
        return seen

    async def _stream_agent(self, stop_after: int | None) -> int:
        # The middleware sees the model call inside the agent; stream the agent's messages.
        agent = self._agent()
        inputs = {"messages": [HumanMessage(PROMPT)]}
        config = self._config()

        def counts(item: Any) -> bool:
            chunk = item[0] if isinstance(item, tuple) else item
            return isinstance(chunk, AIMessageChunk) and bool(chunk.content)

        if self.sync:

            def consume() -> int:
                seen = 0
                for item in agent.stream(inputs, config, stream_mode="messages"):
                    seen += counts(item)
                    if stop_after is not None and seen >= stop_after:
                        break
                return seen

            return await asyncio.to_thread(consume)
        seen = 0
        stream = agent.astream(inputs, config, stream_mode="messages")
        try:
            async for item in stream:
                seen += counts(item)
                if stop_after is not None and seen >= stop_after:
                    break
        finally:
            await stream.aclose()
        return seen

    async def retry_same_identity(self) -> None:
        # The model step crashes after the provider answered; resuming the thread re-runs the
        # step under the same task id (LangGraph's own recovery), which must not pay twice.
        agent = self._agent(FailOnce(), checkpointer=InMemorySaver())
        config = self._config(thread=f"thread-{uuid.uuid4()}")
        inputs = {"messages": [HumanMessage(PROMPT)]}
        call = agent.invoke if self.sync else agent.ainvoke
        try:
            await self._call(call, inputs, config)
        except TransientError:
            pass
        else:
            raise AssertionError("the first attempt should have crashed")
        await self._call(call, None, config)

    async def aclose(self) -> None:
        self.model.unblock()


class LangChainAdapter(PluginAdapter):
    denial_error = BudgetExceededError
    fake_features: ClassVar[frozenset[str]] = frozenset({"report_usage", "fail_after"})

    def __init__(self, *, sync: bool, middleware: bool) -> None:
        self.sync = sync
        self.middleware = middleware

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return LangChainHarness(settings, fake, sync=self.sync, middleware=self.middleware)


class HandlerAsync(LangChainAdapter):
    def __init__(self) -> None:
        super().__init__(sync=False, middleware=False)


class HandlerSync(LangChainAdapter):
    unsupported: ClassVar[Mapping[str, str]] = {"cancellation": SYNC_CANCEL}

    def __init__(self) -> None:
        super().__init__(sync=True, middleware=False)


class MiddlewareAsync(LangChainAdapter):
    unsupported: ClassVar[Mapping[str, str]] = {"stream_early_stop": AGENT_STREAM_STOP}

    def __init__(self) -> None:
        super().__init__(sync=False, middleware=True)


class MiddlewareSync(LangChainAdapter):
    unsupported: ClassVar[Mapping[str, str]] = {
        "cancellation": SYNC_CANCEL,
        "stream_early_stop": AGENT_STREAM_STOP,
    }

    def __init__(self) -> None:
        super().__init__(sync=True, middleware=True)
