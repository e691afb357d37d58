"""The adapter a plugin supplies so the contract suite can drive its framework.

A plugin's tests implement two small classes and inherit the suite::

    class LangChainAdapter(PluginAdapter):
        denial_error = LangChainBudgetExceededError

        def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
            return MyHarness(settings, fake)   # framework fake model wired through the plugin

    class TestContract(ContractSuite):
        adapter = LangChainAdapter()

:class:`FakeSpec` says what the framework's own fake model does on every provider call;
:class:`Harness` is one agent (or model) built on it and wired through the plugin with the
given :class:`~runcycles_core.plugin.CyclesSettings`. Everything is ``async`` so that
async-only frameworks fit; a sync entry point is exercised by running it in a worker thread
(``asyncio.to_thread``), which also gives real parallelism for the concurrency scenario.

This interface is additive-only: new members get defaults so existing adapters keep working.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from runcycles_core.errors import BudgetExceededError
from runcycles_core.plugin import CyclesSettings
from runcycles_core.pricing import Usage

__all__ = [
    "DEFAULT_USAGE",
    "FAKE_FEATURES",
    "SCENARIOS",
    "FakeSpec",
    "Harness",
    "PluginAdapter",
    "ProviderError",
]

#: Scenario ids (issue 4, 1-10) an adapter may name in :attr:`PluginAdapter.unsupported`.
SCENARIOS = (
    "deny_before_provider",  # 1
    "deny_before_provider_streaming",  # 1
    "commit_priced_usage",  # 2
    "release_on_provider_error",  # 3
    "release_on_stream_error",  # 3
    "stream_commits_final_usage",  # 4
    "stream_early_stop",  # 4
    "cancellation",  # 5
    "tool_gating",  # 6
    "tool_denial",  # 6
    "concurrency",  # 7
    "subject_mapping",  # 8
    "subject_mapping_tools",  # 8
    "retry_same_identity",  # 9
    "shadow",  # 10
    "outage_fail_closed",  # 10
    "outage_fail_open",  # 10
    "unknown_model",  # 10
    # The kit's settlement rule (runcycles_core.plugin), asserted to the exact amount:
    "settle_no_usage",  # (a) provider reported no usage
    "settle_raise_after_partial",  # (d) the stream raised after partial output
)

#: :class:`FakeSpec` fields an adapter's fake may implement beyond the original ones; a scenario
#: needing one the adapter does not list in :attr:`PluginAdapter.fake_features` is skipped with
#: that reason (never passed silently).
FAKE_FEATURES = (
    "report_usage",  # FakeSpec.report_usage=False: the provider reports no usage at all
    "fail_after",  # FakeSpec.fail_after=n: a stream raises ProviderError after n content chunks
)

#: Usage every fake provider call reports unless the adapter overrides
#: :attr:`PluginAdapter.usage`. Cache reads and reasoning are included so the commit proves they
#: are priced (input includes cache reads, output includes reasoning: genai-prices conventions).
DEFAULT_USAGE = Usage(
    input_tokens=1_200,
    output_tokens=300,
    cache_read_tokens=400,
    reasoning_tokens=120,
)


class ProviderError(RuntimeError):
    """What the fake provider raises when :attr:`FakeSpec.fail` is set."""


@dataclass(frozen=True)
class FakeSpec:
    """What the framework's fake model does on every provider call.

    Attributes:
        model: the model name the fake reports; the plugin must discover it (and price it).
        usage: usage reported per provider call (when streaming: on the final chunk, the way
            providers report it).
        text: the answer's text.
        fail: count the call, then raise :class:`ProviderError` (when streaming: before the
            first chunk). The framework may wrap it; the suite looks for it in the
            ``__cause__`` / ``__context__`` chain.
        hang: count the call, then block until cancelled (the cancellation scenario).
        tool: when set, the first model reply of each run calls this tool once with no
            arguments; the tool's body counts itself in :attr:`Harness.tool_calls` and returns
            ``"42"``; the second model reply is the final answer. So one run = 2 provider calls.
        stream_chunks: number of content chunks a streamed answer is split into, exactly as
            :meth:`chunk_texts` splits it (the suite computes expected charges from those).
        report_usage: False: the provider reports no usage (neither on the response nor on a
            final stream chunk), as some endpoints do; needs the ``report_usage`` fake feature.
        fail_after: when streaming, raise :class:`ProviderError` after this many content chunks
            (before the usage chunk); needs the ``fail_after`` fake feature.
    """

    model: str
    usage: Usage
    text: str = "The answer is 42."
    fail: bool = False
    hang: bool = False
    tool: str | None = None
    stream_chunks: int = 4
    report_usage: bool = True
    fail_after: int | None = None

    def chunk_texts(self, text: str | None = None) -> list[str]:
        """``text`` (default: :attr:`text`) as the streamed content chunks: cut into pieces of
        ``ceil(len / stream_chunks)`` characters, so at most :attr:`stream_chunks` of them.
        A fake streams exactly these, one content chunk each."""
        text = self.text if text is None else text
        size = max(1, -(-len(text) // max(1, self.stream_chunks)))
        return [text[i : i + size] for i in range(0, len(text), size)] or [text]


class Harness(ABC):
    """One agent or model on the framework's own fake model, wired through the plugin.

    A harness may be used for several runs, concurrently (the concurrency scenario gathers N
    :meth:`run` calls on one harness), so its counters must be thread- and task-safe.
    """

    @property
    @abstractmethod
    def provider_calls(self) -> int:
        """How many calls reached the fake model (the "provider") so far."""

    @property
    def tool_calls(self) -> int:
        """How many times the tool body ran (only meaningful with :attr:`FakeSpec.tool`)."""
        return 0

    @abstractmethod
    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        """One normal (non-streaming) run; returns the final text.

        ``subject`` (levels ``workspace`` … ``toolset``) and ``dimensions`` are per-run
        overrides: pass them through the framework's per-run channel (run config metadata,
        run context…), the way a user would, not by changing the settings. Exceptions must
        reach the caller the way the framework delivers them to its users.
        """

    @abstractmethod
    async def stream(self, *, stop_after: int | None = None) -> int:
        """One streamed run, consumed through the framework's streaming API. With
        ``stop_after=n`` the consumer stops after ``n`` content chunks (``break`` / ``aclose``),
        before the provider's final usage chunk. Returns the number of chunks consumed."""

    @abstractmethod
    async def retry_same_identity(self) -> None:
        """Run one logical model step that the framework itself executes twice under the
        same run identity (its retry policy re-running a failed step, or a replayed /
        resumed checkpoint). Both attempts reach the provider (:attr:`provider_calls` grows
        by 2); the second attempt succeeds and this returns normally. The ledger must show one
        call's charge: no double charge."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release what :meth:`PluginAdapter.build` acquired (default: nothing)."""


class PluginAdapter(ABC):
    """What a plugin tells the contract suite about itself.

    Attributes:
        denial_error: the plugin's :class:`BudgetExceededError` subclass; every denial must
            reach the caller as this type (unwrapped from the framework's own exceptions).
        model / provider: the priced model name the fakes report, and its provider.
        usage: usage per provider call (cache and reasoning tokens included by default).
        unsupported: scenario id (see :data:`SCENARIOS`) → why this framework cannot support
            it. The suite asserts the declaration (a known id and a real reason) and skips the
            scenario with that reason (``pytest.skip``); nothing passes silently.
        fake_features: the optional :class:`FakeSpec` behaviours (see :data:`FAKE_FEATURES`)
            this adapter's fake implements; scenarios needing another one are skipped with
            the reason.
    """

    denial_error: ClassVar[type[BudgetExceededError]]
    model: ClassVar[str] = "gpt-4o"
    provider: ClassVar[str | None] = "openai"
    usage: ClassVar[Usage] = DEFAULT_USAGE
    unsupported: ClassVar[Mapping[str, str]] = {}
    fake_features: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        """Build a harness on ``fake`` wired through the plugin with ``settings``.

        ``settings`` has no ``denial_error``: the plugin's entry point must install its own
        subclass. The harness is closed with :meth:`Harness.aclose` after the test.
        """
