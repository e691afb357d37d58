"""A reference plugin written straight on :mod:`runcycles_core.plugin` with no framework:
the smallest thing that honours the contract, so the suite itself is tested."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import Mapping
from typing import ClassVar

from runcycles_core.errors import BudgetExceededError
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    amodel_guard,
    asettle_model_call,
    atool_guard,
)
from runcycles_testing import FakeSpec, Harness, PluginAdapter, ProviderError


class ReferenceBudgetExceeded(BudgetExceededError):
    """The reference plugin's denial type."""


class ReferenceHarness(Harness):
    def __init__(self, settings: CyclesSettings, fake: FakeSpec) -> None:
        self.settings = dataclasses.replace(settings, denial_error=ReferenceBudgetExceeded)
        self.fake = fake
        self._lock = threading.Lock()
        self._calls = 0
        self._tools = 0

    @property
    def provider_calls(self) -> int:
        return self._calls

    @property
    def tool_calls(self) -> int:
        return self._tools

    def _model_call(
        self,
        key: str | None = None,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> ModelCall:
        return ModelCall(
            model=self.fake.model,
            provider="openai",
            prompt="What is six times seven?",
            max_output_tokens=1_000,
            idempotency_key=key,
            subject=subject,
            dimensions=dimensions,
        )

    async def _provider(self) -> None:
        with self._lock:
            self._calls += 1
        if self.fake.hang:
            await asyncio.Event().wait()
        if self.fake.fail:
            raise ProviderError("provider exploded")

    async def _call(self, call: ModelCall) -> None:
        guard = await amodel_guard(self.settings, call).reserve()
        try:
            await self._provider()
        except BaseException as exc:
            await asettle_model_call(guard, self.settings, call, error=exc)
            raise
        received = Received()
        received.add(self.fake.text)
        usage = self.fake.usage if self.fake.report_usage else None
        await asettle_model_call(guard, self.settings, call, received=received, usage=usage)

    async def run(
        self,
        *,
        subject: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> str:
        await self._call(self._model_call(subject=subject, dimensions=dimensions))
        if self.fake.tool:
            guard = atool_guard(self.settings, self.fake.tool, subject=subject)
            if guard is None:
                self._tools += 1
            else:
                async with guard:
                    guard.mark_ran()
                    self._tools += 1
            await self._call(self._model_call(subject=subject, dimensions=dimensions))
        return self.fake.text

    async def stream(self, *, stop_after: int | None = None) -> int:
        call = self._model_call()
        guard = await amodel_guard(self.settings, call).reserve()
        received = Received()
        error: BaseException | None = None
        try:
            await self._provider()
            for part in self.fake.chunk_texts():
                if stop_after is not None and received.chunks >= stop_after:
                    error = GeneratorExit()  # the consumer stopped before the usage chunk
                    return received.chunks
                if self.fake.fail_after is not None and received.chunks >= self.fake.fail_after:
                    raise ProviderError("the stream broke")
                received.add(part)
        except BaseException as exc:
            error = exc
            raise
        finally:
            usage = self.fake.usage if self.fake.report_usage and error is None else None
            await asettle_model_call(
                guard, self.settings, call, received=received, usage=usage, error=error
            )
        return received.chunks

    async def retry_same_identity(self) -> None:
        key = f"ref-step-{uuid.uuid4()}"
        await self._call(self._model_call(key))
        # The step failed after its model call; the "framework" re-runs it under the same id.
        await self._call(self._model_call(key))


class ReferenceAdapter(PluginAdapter):
    denial_error = ReferenceBudgetExceeded
    fake_features: ClassVar[frozenset[str]] = frozenset({"report_usage", "fail_after"})

    def build(self, settings: CyclesSettings, fake: FakeSpec) -> Harness:
        return ReferenceHarness(settings, fake)
