"""The suite fails plugins that break the contract, and polices ``unsupported`` declarations.

Each broken plugin below is the reference plugin with one defect; the scenario that targets the
defect must fail with an AssertionError (a suite that passes everything proves nothing)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from runcycles_core.plugin import CyclesSettings, ModelCall
from runcycles_testing import Bench, ContractSuite, FakeSpec, Harness, PluginAdapter

from .reference import ReferenceAdapter, ReferenceHarness

Build = Callable[..., Harness]


class NoReleaseHarness(ReferenceHarness):
    """Leaves the hold in place when the provider fails (a leak until the TTL)."""

    async def _call(self, call: ModelCall) -> None:
        from runcycles_core.plugin import acommit_usage, amodel_guard

        guard = await amodel_guard(self.settings, call).reserve()
        await self._provider()
        await acommit_usage(guard, self.settings, call.model, self.fake.usage)


class ProviderFirstHarness(ReferenceHarness):
    """Calls the provider before asking for budget."""

    async def _call(self, call: ModelCall) -> None:
        await self._provider()
        await super()._call(call)


class CoreDenialHarness(ReferenceHarness):
    """Raises core's denial type instead of the plugin's own subclass."""

    def __init__(self, settings: CyclesSettings, fake: FakeSpec) -> None:
        super().__init__(settings, fake)
        self.settings = dataclasses.replace(settings, denial_error=None)


class FreshKeyHarness(ReferenceHarness):
    """Ignores the framework's run identity: a retried step pays twice."""

    async def retry_same_identity(self) -> None:
        await self._call(self._model_call())
        await self._call(self._model_call())


class IgnoresRunSubjectHarness(ReferenceHarness):
    """Drops per-run subject overrides."""

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        return await super().run()


class EstimateOnStopHarness(ReferenceHarness):
    """Charges the whole estimate for a stream the consumer stopped (a plugin's own rule)."""

    async def stream(self, *, stop_after: int | None = None) -> int:
        from runcycles_core.plugin import amodel_guard

        guard = await amodel_guard(self.settings, self._model_call()).reserve()
        await self._provider()
        guard.mark_ran()
        await guard.release("consumer stopped early")  # ran: commits the estimate
        return stop_after or self.fake.stream_chunks


class EstimateWithoutUsageHarness(ReferenceHarness):
    """Commits the estimate when the provider reports no usage, instead of counting."""

    async def _call(self, call: ModelCall) -> None:
        from runcycles_core.plugin import amodel_guard

        guard = await amodel_guard(self.settings, call).reserve()
        await self._provider()
        if self.fake.report_usage:
            from runcycles_core.plugin import acommit_usage

            await acommit_usage(guard, self.settings, call.model, self.fake.usage)
        else:
            await guard.commit(metadata={"actual_source": "estimate"})


class ReleaseOnCancelHarness(ReferenceHarness):
    """Gives the hold back when the call is cancelled (the provider already bills the prompt)."""

    async def _call(self, call: ModelCall) -> None:
        from runcycles_core.plugin import amodel_guard

        guard = await amodel_guard(self.settings, call).reserve()
        try:
            await self._provider()
        except BaseException:
            await guard.release("cancelled")
            raise
        await guard.commit()


def adapter_for(harness: type[ReferenceHarness]) -> PluginAdapter:
    class Broken(ReferenceAdapter):
        def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
            return harness(settings, fake)

    return Broken()


@pytest_asyncio.fixture
async def builds(bench: Bench) -> AsyncIterator[Callable[[PluginAdapter], Build]]:
    used: list[CyclesSettings] = []

    def for_adapter(adapter: PluginAdapter) -> Build:
        def build(settings: CyclesSettings, **fake: Any) -> Harness:
            used.append(settings)
            spec = FakeSpec(**{"model": adapter.model, "usage": adapter.usage, **fake})
            return adapter.build(settings, spec)

        return build

    yield for_adapter
    for s in used:
        derived = s._derived.get("async")
        if derived is not None:
            await derived.aclose()


def suite(adapter: PluginAdapter) -> ContractSuite:
    class Suite(ContractSuite):
        pass

    Suite.adapter = adapter
    return Suite()


@pytest.mark.parametrize(
    ("harness", "scenario"),
    [
        (NoReleaseHarness, "test_release_on_provider_error"),
        (ProviderFirstHarness, "test_deny_before_provider"),
        (CoreDenialHarness, "test_deny_before_provider"),
        (FreshKeyHarness, "test_retry_same_identity"),
        (IgnoresRunSubjectHarness, "test_subject_mapping"),
        (EstimateOnStopHarness, "test_stream_early_stop"),
        (EstimateWithoutUsageHarness, "test_settle_no_usage"),
        (ReleaseOnCancelHarness, "test_cancellation"),
    ],
)
async def test_broken_plugin_fails_its_scenario(
    bench: Bench,
    builds: Callable[[PluginAdapter], Build],
    harness: type[ReferenceHarness],
    scenario: str,
) -> None:
    adapter = adapter_for(harness)
    method = getattr(suite(adapter), scenario)
    with pytest.raises(AssertionError):
        await method(bench, builds(adapter))


class Declares(ReferenceAdapter):
    unsupported: ClassVar[Mapping[str, str]] = {}


@pytest.mark.parametrize(
    ("declared", "ok"),
    [
        ({"cancellation": "sync calls cannot be cancelled from another task"}, True),
        ({"cancellation": "n/a"}, False),  # no real reason
        ({"cancelation": "a typo in the scenario id must not hide a skip"}, False),
    ],
)
def test_unsupported_declarations_are_policed(declared: Mapping[str, str], ok: bool) -> None:
    class Adapter(Declares):
        unsupported = declared

    s = suite(Adapter())
    if ok:
        assert s.unsupported("cancellation") is True
        assert s.unsupported("shadow") is False
    else:
        with pytest.raises(AssertionError):
            s.unsupported("cancellation")
