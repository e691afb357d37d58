"""The plugin contract suite (issue 4, scenarios 1-10), asserted against a real server's ledger.

Subclass it in a plugin's tests with the plugin's adapter::

    class TestContract(ContractSuite):
        adapter = MyAdapter()

Every scenario runs against a fresh tenant on a real server-lite (the ``bench`` fixture from
:mod:`runcycles_testing.fixtures`) and checks balances and reservations on the server, not
what the plugin believes. A scenario the adapter declares in
:attr:`~runcycles_testing.PluginAdapter.unsupported` asserts the declaration instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from runcycles_core.errors import BudgetExceededError, CyclesUnavailableError
from runcycles_core.models import ReservationStatus, ReservationSummary
from runcycles_core.plugin import CyclesSettings
from runcycles_core.pricing import UnknownModelError, Usage, default_pricing, price

from .adapter import FAKE_FEATURES, SCENARIOS, FakeSpec, Harness, PluginAdapter, ProviderError
from .bench import DEAD_URL, Bench

__all__ = ["ContractSuite"]

Build = Callable[..., Harness]

LLM_KIND = "llm.completion"
TOOL = "lookup"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


async def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class ContractSuite:
    """Scenarios every plugin must pass. Set :attr:`adapter` in the subclass."""

    adapter: ClassVar[PluginAdapter]

    # -- plumbing -------------------------------------------------------------------------------
    @pytest_asyncio.fixture
    async def build(self, bench: Bench) -> AsyncIterator[Build]:
        """``build(settings, **fake_fields)`` → a harness, closed after the test."""
        made: list[Harness] = []
        used: list[CyclesSettings] = []

        def make(settings: CyclesSettings, **fake: Any) -> Harness:
            used.append(settings)
            spec = FakeSpec(
                **{"model": self.adapter.model, "usage": self.adapter.usage, **fake},
            )
            harness = self.adapter.build(settings, spec)
            made.append(harness)
            return harness

        yield make
        for h in made:
            await h.aclose()
        for s in used:
            # An async client derived from the sync one lives on this test's event loop.
            derived = s._derived.get("async")
            if derived is not None:
                await derived.aclose()

    def unsupported(self, scenario: str) -> bool:
        """True (after asserting the declaration) if the adapter declares ``scenario``
        unsupported; the test then ends without running it."""
        assert scenario in SCENARIOS, scenario
        for name in self.adapter.unsupported:
            assert name in SCENARIOS, f"unsupported names an unknown scenario: {name!r}"
        reason = self.adapter.unsupported.get(scenario)
        if reason is None:
            return False
        assert isinstance(reason, str) and len(reason.strip()) >= 20, (
            f"{scenario} is declared unsupported without a real reason: {reason!r}"
        )
        return True

    def require(self, scenario: str, *features: str) -> None:
        """Skip (``pytest.skip`` with the reason) a scenario the adapter declares unsupported,
        or one needing a fake feature the adapter's fake does not implement."""
        if self.unsupported(scenario):
            pytest.skip(f"{scenario}: {self.adapter.unsupported[scenario]}")
        for feature in features:
            assert feature in FAKE_FEATURES, feature
            if feature not in self.adapter.fake_features:
                pytest.skip(
                    f"{scenario} needs FakeSpec.{feature}, which this adapter's fake does not "
                    "implement (add it to PluginAdapter.fake_features once it does)"
                )

    @staticmethod
    def received_tokens(texts: list[str]) -> int:
        """The kit's offline count of received output: the joined text's tokens, at least one
        per content chunk (written out here, not taken from the kit, so the suite checks it)."""
        return max(len(texts), default_pricing().token_counter("".join(texts)))

    def assert_counted(
        self,
        bench: Bench,
        outcomes: tuple[str, ...],
        output_tokens: int,
    ) -> None:
        """The single model call was settled by the kit's rule for a call without reported
        usage: committed exactly the priced offline count of prompt + ``output_tokens``."""
        rows = self.settled(bench)
        assert [(r.status, r.action.kind) for r in rows] == [
            (ReservationStatus.COMMITTED, LLM_KIND)
        ], rows
        meta = bench.reader.get_reservation(rows[0].reservation_id).committed_metadata or {}
        assert meta.get("actual_source") == "counted", meta
        assert meta.get("outcome") in outcomes, meta
        counted_in = meta.get("counted_input_tokens")
        # The prompt is counted offline from what the framework sends (its system prompt and
        # tool schemas included): never zero, since the provider bills it.
        assert isinstance(counted_in, int) and counted_in > 0, meta
        assert meta.get("counted_output_tokens") == output_tokens, meta
        a = self.adapter
        expected = price(
            a.model, Usage(input_tokens=counted_in, output_tokens=output_tokens), a.provider
        ).amount
        assert rows[0].committed is not None
        assert rows[0].committed.amount == expected
        assert bench.spent() == expected

    @property
    def call_price(self) -> int:
        """What one provider call of the fake costs, priced by core."""
        a = self.adapter
        return price(a.model, a.usage, a.provider).amount

    @staticmethod
    def settled(bench: Bench) -> list[ReservationSummary]:
        """Every reservation of the tenant, asserting that none is still held."""
        rows = bench.reservations()
        active = [r for r in rows if r.status is ReservationStatus.ACTIVE]
        assert not active, f"reservations left held: {active}"
        assert bench.reserved() == 0
        return rows

    # -- 1. deny before the provider -------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_deny_before_provider(self, bench: Bench, build: Build) -> None:
        self.require("deny_before_provider")
        bench.fund({"": 1})
        h = build(bench.settings())
        with pytest.raises(BudgetExceededError) as info:
            await h.run()
        # The plugin's own subclass, unwrapped: the framework's abort contract and the
        # caller's ``except`` both see it.
        assert isinstance(info.value, self.adapter.denial_error), type(info.value)
        assert info.value.error_code, "the denial keeps the server's error code"
        assert h.provider_calls == 0
        assert self.settled(bench) == []
        assert bench.spent() == 0

    @pytest.mark.asyncio
    async def test_deny_before_provider_streaming(self, bench: Bench, build: Build) -> None:
        self.require("deny_before_provider_streaming")
        bench.fund({"": 1})
        h = build(bench.settings())
        with pytest.raises(BudgetExceededError) as info:
            await h.stream()
        assert isinstance(info.value, self.adapter.denial_error), type(info.value)
        assert h.provider_calls == 0
        assert self.settled(bench) == []

    @pytest.mark.asyncio
    async def test_handled_denial_is_quiet(
        self, bench: Bench, build: Build, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A denial the caller catches is the caller's to report: neither the plugin nor the
        framework may log it as an error or warning on the way out (other records stay)."""
        self.require("deny_before_provider")
        bench.fund({"": 1})
        h = build(bench.settings())
        caplog.set_level(logging.WARNING)
        with pytest.raises(BudgetExceededError) as info:
            await h.run()
        code = str(info.value.error_code)
        noisy = [
            f"{r.name} {r.levelname}: {r.getMessage()}"
            for r in caplog.records
            if r.levelno >= logging.WARNING
            and (
                code in r.getMessage()
                or "BudgetExceeded" in r.getMessage()
                # exc_info is a (type, value, traceback) tuple, or whatever the logger was given
                or (
                    isinstance(r.exc_info, tuple) and isinstance(r.exc_info[1], BudgetExceededError)
                )
            )
        ]
        assert not noisy, f"a handled denial was logged: {noisy}"

    # -- 2. commit equals the priced usage ------------------------------------------------------
    @pytest.mark.asyncio
    async def test_commit_priced_usage(self, bench: Bench, build: Build) -> None:
        self.require("commit_priced_usage")
        bench.fund()
        h = build(bench.settings())
        text = await h.run()
        assert "42" in text
        assert h.provider_calls == 1
        rows = self.settled(bench)
        assert [(r.status, r.action.kind) for r in rows] == [
            (ReservationStatus.COMMITTED, LLM_KIND)
        ]
        assert rows[0].committed is not None
        assert rows[0].committed.amount == self.call_price
        assert bench.spent() == self.call_price
        detail = bench.reader.get_reservation(rows[0].reservation_id)
        meta = detail.committed_metadata or {}
        assert meta.get("actual_source") == "priced_usage", meta
        assert self.adapter.model in (rows[0].action.name or "")

    # -- 3. release when the model call raises --------------------------------------------------
    @pytest.mark.asyncio
    async def test_release_on_provider_error(self, bench: Bench, build: Build) -> None:
        self.require("release_on_provider_error")
        bench.fund()
        h = build(bench.settings(), fail=True)
        # The framework may wrap the provider's error; it must still be in the chain.
        with pytest.raises(Exception) as info:  # noqa: PT011
            await h.run()
        assert any(isinstance(e, ProviderError) for e in _chain(info.value)), info.value
        assert h.provider_calls == 1
        rows = self.settled(bench)
        assert [r.status for r in rows] == [ReservationStatus.RELEASED]
        assert bench.spent() == 0

    @pytest.mark.asyncio
    async def test_release_on_stream_error(self, bench: Bench, build: Build) -> None:
        self.require("release_on_stream_error")
        bench.fund()
        h = build(bench.settings(), fail=True)
        # The provider fails before the first chunk: nothing was generated, nothing is owed.
        with pytest.raises(Exception) as info:  # noqa: PT011
            await h.stream()
        assert any(isinstance(e, ProviderError) for e in _chain(info.value)), info.value
        assert h.provider_calls == 1
        rows = self.settled(bench)
        assert [r.status for r in rows] == [ReservationStatus.RELEASED]
        assert bench.spent() == 0

    # -- 4. streaming ---------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_stream_commits_final_usage(self, bench: Bench, build: Build) -> None:
        self.require("stream_commits_final_usage")
        bench.fund()
        h = build(bench.settings(), stream_chunks=4)
        chunks = await h.stream()
        assert chunks >= 4
        assert h.provider_calls == 1
        rows = self.settled(bench)
        assert [r.status for r in rows] == [ReservationStatus.COMMITTED]
        assert rows[0].committed is not None
        assert rows[0].committed.amount == self.call_price
        assert bench.spent() == self.call_price

    @pytest.mark.asyncio
    async def test_stream_early_stop(self, bench: Bench, build: Build) -> None:
        """Rule (b): a stream the consumer stops before the usage chunk pays the prompt plus
        the chunks received, counted offline."""
        self.require("stream_early_stop")
        bench.fund()
        h = build(bench.settings(), stream_chunks=6)
        chunks = await h.stream(stop_after=2)
        assert chunks == 2
        assert h.provider_calls == 1
        parts = FakeSpec(model="m", usage=Usage(), stream_chunks=6).chunk_texts()
        self.assert_counted(bench, ("stopped", "cancelled"), self.received_tokens(parts[:2]))

    # -- 5. cancellation ------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_cancellation(self, bench: Bench, build: Build) -> None:
        """Rule (c): a call cancelled while the provider works pays its prompt (counted
        offline; nothing was received), settled before the cancellation reaches the caller."""
        self.require("cancellation")
        bench.fund()
        h = build(bench.settings(), hang=True)
        task = asyncio.ensure_future(h.run())
        await _wait_for(lambda: h.provider_calls == 1 or task.done(), "the provider call")
        assert not task.done(), task
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Settled by the time the cancellation reached the caller: nothing left held.
        self.assert_counted(bench, ("cancelled",), 0)

    # -- 6. tools -------------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_tool_gating(self, bench: Bench, build: Build) -> None:
        self.require("tool_gating")
        bench.fund()
        # Ungated: no tool budgets configured, the tool runs without a reservation.
        free = build(bench.settings(), tool=TOOL)
        await free.run()
        assert (free.provider_calls, free.tool_calls) == (2, 1)
        assert bench.reservations(kind=f"tool.{TOOL}") == []
        # Gated as action kind tool.<name> with the configured estimate.
        gated = build(bench.settings(tool_budgets={TOOL: 7_000}), tool=TOOL)
        await gated.run()
        assert (gated.provider_calls, gated.tool_calls) == (2, 1)
        rows = self.settled(bench)
        tools = [r for r in rows if r.action.kind == f"tool.{TOOL}"]
        assert len(tools) == 1
        assert tools[0].status is ReservationStatus.COMMITTED
        assert tools[0].reserved.amount == 7_000
        assert tools[0].committed is not None and tools[0].committed.amount == 7_000
        llm = [r for r in rows if r.action.kind == LLM_KIND]
        assert len(llm) == 4
        assert bench.spent() == 4 * self.call_price + 7_000

    @pytest.mark.asyncio
    async def test_tool_denial(self, bench: Bench, build: Build) -> None:
        self.require("tool_denial")
        bench.fund({"": 100 * self.call_price})
        h = build(bench.settings(tool_budgets={"*": 10**12}), tool=TOOL)
        with pytest.raises(BudgetExceededError) as info:
            await h.run()
        assert isinstance(info.value, self.adapter.denial_error), type(info.value)
        assert h.tool_calls == 0
        assert h.provider_calls == 1
        rows = self.settled(bench)
        assert [(r.action.kind, r.status) for r in rows] == [
            (LLM_KIND, ReservationStatus.COMMITTED)
        ]
        assert bench.spent() == self.call_price

    # -- 7. concurrency -------------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_concurrency(self, bench: Bench, build: Build) -> None:
        self.require("concurrency")
        n, k = 8, 3
        cost = self.call_price
        # Estimate == actual, so a finished call frees nothing: exactly k fit in any order.
        bench.fund({"": k * cost + cost // 2})
        h = build(bench.settings(estimate=cost))
        results = await asyncio.gather(*(h.run() for _ in range(n)), return_exceptions=True)
        ok = [r for r in results if isinstance(r, str)]
        denied = [r for r in results if isinstance(r, self.adapter.denial_error)]
        other = [r for r in results if not isinstance(r, (str, self.adapter.denial_error))]
        assert other == []
        assert (len(ok), len(denied)) == (k, n - k)
        assert h.provider_calls == k
        rows = self.settled(bench)
        assert [r.status for r in rows] == [ReservationStatus.COMMITTED] * k
        assert bench.spent() == k * cost

    # -- 8. subject mapping ---------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_subject_mapping(self, bench: Bench, build: Build) -> None:
        self.require("subject_mapping")
        bench.fund()
        settings = bench.settings(
            workspace="ws1",
            app="app1",
            workflow="wf1",
            agent="cfg-agent",
            toolset="ts1",
            dimensions={"team": "core"},
        )
        h = build(settings)
        await h.run()
        await h.run(subject={"agent": "run-agent", "workflow": "wf2"}, dimensions={"feat": "x"})
        first, second = self.settled(bench)
        assert first.subject.model_dump(exclude_none=True) == {
            "tenant": bench.tenant,
            "workspace": "ws1",
            "app": "app1",
            "workflow": "wf1",
            "agent": "cfg-agent",
            "toolset": "ts1",
            "dimensions": {"team": "core"},
        }
        assert second.subject.model_dump(exclude_none=True) == {
            "tenant": bench.tenant,
            "workspace": "ws1",
            "app": "app1",
            "workflow": "wf2",
            "agent": "run-agent",
            "toolset": "ts1",
            "dimensions": {"team": "core", "feat": "x"},
        }

    @pytest.mark.asyncio
    async def test_subject_mapping_tools(self, bench: Bench, build: Build) -> None:
        self.require("subject_mapping_tools")
        bench.fund()
        settings = bench.settings(agent="cfg-agent", tool_budgets={TOOL: 1_000})
        h = build(settings, tool=TOOL)
        await h.run(subject={"agent": "run-agent"})
        rows = self.settled(bench)
        assert sorted(r.action.kind for r in rows) == [LLM_KIND, LLM_KIND, f"tool.{TOOL}"]
        # The per-run subject applies to the run's tool calls as well as its model calls.
        assert {r.subject.agent for r in rows} == {"run-agent"}

    # -- 9. framework retries keep the idempotency key ------------------------------------------
    @pytest.mark.asyncio
    async def test_retry_same_identity(self, bench: Bench, build: Build) -> None:
        self.require("retry_same_identity")
        bench.fund()
        h = build(bench.settings())
        await h.retry_same_identity()
        assert h.provider_calls == 2
        rows = self.settled(bench)
        committed = [r for r in rows if r.status is ReservationStatus.COMMITTED]
        assert len(committed) == 1, rows
        assert bench.spent() == self.call_price

    # -- 10. shadow, outage policy, unknown model -----------------------------------------------
    @pytest.mark.asyncio
    async def test_shadow(self, bench: Bench, build: Build) -> None:
        self.require("shadow")
        bench.fund({"": 1})
        h = build(bench.settings(shadow=True))
        assert "42" in await h.run()
        assert h.provider_calls == 1
        assert self.settled(bench) == []
        assert bench.spent() == 0

    @pytest.mark.asyncio
    async def test_outage_fail_closed(self, bench: Bench, build: Build) -> None:
        self.require("outage_fail_closed")
        bench.fund()
        h = build(bench.settings(client_overrides={"base_url": DEAD_URL}))
        with pytest.raises(CyclesUnavailableError) as info:
            await h.run()
        assert not isinstance(info.value, BudgetExceededError)
        assert h.provider_calls == 0

    @pytest.mark.asyncio
    async def test_outage_fail_open(self, bench: Bench, build: Build) -> None:
        self.require("outage_fail_open")
        bench.fund()
        settings = bench.settings(
            outage_policy="fail_open",
            client_overrides={"base_url": DEAD_URL, "retry_flush_timeout": 0.0},
        )
        h = build(settings)
        assert "42" in await h.run()
        assert h.provider_calls == 1

    @pytest.mark.asyncio
    async def test_unknown_model(self, bench: Bench, build: Build) -> None:
        self.require("unknown_model")
        bench.fund()
        # Core's policy: an unpriced model with no explicit estimate is refused before the call…
        h = build(bench.settings(), model="no-such-model-7b")
        with pytest.raises(UnknownModelError):
            await h.run()
        assert h.provider_calls == 0
        # …and with an explicit estimate it runs and the estimate is committed, tagged.
        h2 = build(bench.settings(estimate=5_000), model="no-such-model-7b")
        await h2.run()
        assert h2.provider_calls == 1
        rows = self.settled(bench)
        assert [r.status for r in rows] == [ReservationStatus.COMMITTED]
        assert bench.spent() == 5_000
        meta = bench.reader.get_reservation(rows[0].reservation_id).committed_metadata or {}
        assert meta.get("actual_source") == "estimate", meta

    # -- the kit's settlement rule, exact amounts -----------------------------------------------
    @pytest.mark.asyncio
    async def test_settle_no_usage(self, bench: Bench, build: Build) -> None:
        """Rule (a): a completed call whose provider reported no usage pays the prompt plus
        the answer, counted offline."""
        self.require("settle_no_usage", "report_usage")
        bench.fund()
        h = build(bench.settings(), report_usage=False)
        text = await h.run()
        assert "42" in text
        assert h.provider_calls == 1
        fake = FakeSpec(model="m", usage=Usage())
        self.assert_counted(bench, ("no_usage",), self.received_tokens([fake.text]))

    @pytest.mark.asyncio
    async def test_settle_raise_after_partial(self, bench: Bench, build: Build) -> None:
        """Rule (d): a stream that raises after partial output pays the prompt plus what was
        received (a stream that raises before any output is released: scenario 3)."""
        self.require("settle_raise_after_partial", "fail_after")
        bench.fund()
        h = build(bench.settings(), stream_chunks=6, fail_after=3)
        with pytest.raises(Exception) as info:  # noqa: PT011
            await h.stream()
        assert any(isinstance(e, ProviderError) for e in _chain(info.value)), info.value
        assert h.provider_calls == 1
        parts = FakeSpec(model="m", usage=Usage(), stream_chunks=6).chunk_texts()
        self.assert_counted(bench, ("failed",), self.received_tokens(parts[:3]))
