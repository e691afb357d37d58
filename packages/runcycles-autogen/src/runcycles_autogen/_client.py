"""``CyclesChatCompletionClient``: any AutoGen model client, budgeted.

Every ``create`` / ``create_stream`` reserves before the inner client is called and is settled
by the kit's one rule (``asettle_model_call``): the reported ``CreateResult.usage`` priced and
committed (for a stream, the final ``CreateResult``'s), otherwise the prompt plus what was
received counted offline, and a call that raised before any output released. A denial raises
:class:`~runcycles_autogen.BudgetExceededError` before the provider is called.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal
from weakref import WeakSet

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,  # type: ignore[attr-defined,unused-ignore]
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from runcycles_core.lifecycle import AsyncGuard
from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    amodel_guard,
    areserve_uncancellable,
    asettle_model_call,
    resolve_settings,
)

from ._errors import BudgetExceededError
from ._mapping import max_output_tokens, model_of, prompt_of, provider_of, received_of, usage_of
from ._scope import CyclesRun, current_run, record_error

__all__ = ["CyclesChatCompletionClient"]

log = logging.getLogger("runcycles_autogen")

_NO_ARGS: Mapping[str, Any] = MappingProxyType({})
ToolChoice = Tool | Literal["auto", "required", "none"]


def _keep(error: BaseException) -> None:
    # A provider error too is lost in a team's RuntimeError; kept so cycles_run can restore it.
    # (GeneratorExit and CancelledError are how a call is stopped, not errors.)
    if isinstance(error, Exception):
        record_error(error)


class CyclesChatCompletionClient(ChatCompletionClient):
    """Wrap ``inner`` so every model call reserves budget first and commits its priced usage.

    Args:
        inner: any ``autogen_core.models.ChatCompletionClient`` (``OpenAIChatCompletionClient``,
            ``AnthropicChatCompletionClient``, a custom one…). Wrap every client of a team,
            ``SelectorGroupChat``'s own ``model_client`` included (it makes a model call per
            speaker selection; see :func:`~runcycles_autogen.selector_group_chat`).
        settings: a :class:`~runcycles_core.plugin.CyclesSettings`; or pass its fields as
            keywords (``client=``, ``tenant=`` … ``toolset=``, ``estimate=``, ``shadow=``,
            ``outage_policy=``, ``tool_budgets=``…).
        model / provider: what to price calls by (default: the model in the inner client's
            configuration, and the provider of autogen-ext's own clients).

    ``model_info``, ``capabilities``, ``count_tokens``, ``remaining_tokens``, the usage totals
    and ``close`` are the inner client's. A stream a consumer stopped early is settled when it
    is closed: by :func:`~runcycles_autogen.cycles_run` (``async with``), by :meth:`close`, or
    at garbage collection; the reservation's expiry covers a process that never gets there.
    """

    component_type = "model"

    def __init__(
        self,
        inner: ChatCompletionClient,
        *,
        settings: CyclesSettings | None = None,
        model: str | None = None,
        provider: str | None = None,
        **settings_kwargs: Any,
    ) -> None:
        if isinstance(inner, CyclesChatCompletionClient):
            raise TypeError(
                "inner is already a CyclesChatCompletionClient: each call would be paid twice"
            )
        name = model or model_of(inner)
        if not name:
            raise ValueError(
                f"cannot tell which model {type(inner).__name__} calls; pass model= so its "
                "calls can be priced"
            )
        self.inner = inner
        self.model = name
        self.provider = provider or provider_of(inner)
        self._settings = resolve_settings(
            settings, settings_kwargs, denial_error=BudgetExceededError
        )
        self._max_tokens = max_output_tokens(inner)
        self._pending: BaseException | None = None
        self._streams: WeakSet[AsyncGenerator[str | CreateResult, None]] = WeakSet()
        self._hinted = False
        self.last_error: BaseException | None = None
        """The last error this client raised instead of calling the model (a denial…)."""

    @property
    def settings(self) -> CyclesSettings:
        """The settings every call is reserved with."""
        return self._settings

    def defer(self, error: BaseException) -> None:
        """Make the next call of this client raise ``error`` instead of reserving (what a
        linked :class:`~runcycles_autogen.CyclesWorkbench` does with a tool denial)."""
        self._pending = error

    # -- reserve ---------------------------------------------------------------------------------
    def _raise_pending(self, run: CyclesRun | None) -> None:
        if run is not None:
            run.raise_pending()
        pending, self._pending = self._pending, None
        if pending is not None:
            raise pending

    def _call(
        self, messages: Sequence[LLMMessage], tools: Sequence[object], extra: Mapping[str, Any]
    ) -> ModelCall:
        run = current_run()
        self._raise_pending(run)
        return ModelCall(
            model=self.model,
            provider=self.provider,
            messages=prompt_of(messages, tools),
            max_output_tokens=max_output_tokens(extra) or self._max_tokens,
            subject=run.subject if run else None,
            dimensions=run.dimensions if run else None,
            metadata=run.metadata if run else None,
        )

    async def _reserve(self, call: ModelCall) -> AsyncGuard:
        try:
            guard = await areserve_uncancellable(amodel_guard(self._settings, call).reserve())
        except Exception as exc:
            # A denial, an outage under fail_closed, an unpriced model: kept so that a team's
            # caller can get the typed error back from AutoGen's RuntimeError.
            self.last_error = exc
            record_error(exc)
            raise
        assert guard is not None  # a plain model guard returns itself
        return guard

    async def _settle(
        self,
        guard: AsyncGuard,
        call: ModelCall,
        *,
        received: Received | None = None,
        result: CreateResult | None = None,
        error: BaseException | None = None,
    ) -> None:
        usage = usage_of(result) if result is not None else None
        if result is not None:
            received = received_of(result, received)
        await asettle_model_call(
            guard, self._settings, call, received=received, usage=usage, error=error
        )

    # -- ChatCompletionClient --------------------------------------------------------------------
    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = _NO_ARGS,
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Reserve, call ``inner.create`` with every argument as given, commit or release."""
        call = self._call(messages, tools, extra_create_args)
        guard = await self._reserve(call)
        try:
            result = await self.inner.create(
                messages,
                # Fresh containers, as the interface's own defaults are (a client may mutate).
                tools=list(tools),
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=dict(extra_create_args),
                cancellation_token=cancellation_token,
            )
        except BaseException as exc:
            _keep(exc)
            await self._settle(guard, call, error=exc)
            raise
        await self._settle(guard, call, result=result)
        return result

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = _NO_ARGS,
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """``inner.create_stream``, reserved when iteration starts and settled by the final
        ``CreateResult`` (or however the stream ends)."""
        stream = self._stream(
            messages,
            tools,
            extra_create_args,
            {
                "tool_choice": tool_choice,
                "json_output": json_output,
                "cancellation_token": cancellation_token,
            },
        )
        # Kept (weakly) so that whoever ends the run can close it if its consumer stopped.
        self._streams.add(stream)
        run = current_run()
        if run is not None:
            run.track(stream)
        return stream

    async def _stream(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        extra: Mapping[str, Any],
        kwargs: dict[str, Any],
    ) -> AsyncGenerator[str | CreateResult, None]:
        call = self._call(messages, tools, extra)
        guard = await self._reserve(call)
        received = Received()
        inner = self.inner.create_stream(
            messages, tools=list(tools), extra_create_args=dict(extra), **kwargs
        )
        try:
            async for item in inner:
                if isinstance(item, CreateResult):
                    # Settled before the result is handed on: a consumer that stops right after
                    # it (or fails on it) leaves nothing to settle.
                    if usage_of(item) is None:
                        self._hint_no_stream_usage()
                    await self._settle(guard, call, received=received, result=item)
                else:
                    received.add(item)
                yield item
        except BaseException as exc:
            # GeneratorExit: the consumer stopped (rule b); CancelledError (c); a provider
            # error after or before output (d).
            _keep(exc)
            await self._settle(guard, call, received=received, error=exc)
            raise
        finally:
            # Close the provider's stream now rather than at garbage collection.
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(RuntimeError):
                    await aclose()
        # The stream ended without a final CreateResult: no usage (rule a).
        await self._settle(guard, call, received=received)

    def _hint_no_stream_usage(self) -> None:
        if not self._hinted:
            self._hinted = True
            log.warning(
                "%s streamed with no usage; charging the counted prompt and output instead. "
                "OpenAIChatCompletionClient reports stream usage only when constructed with "
                "stream_options={'include_usage': True}",
                type(self.inner).__name__,
            )

    async def close(self) -> None:
        """Close streams of this client left open by a consumer that stopped (settling them),
        then the inner client."""
        streams, self._streams = list(self._streams), WeakSet()
        for stream in streams:
            with contextlib.suppress(RuntimeError):  # running elsewhere: it settles itself
                await stream.aclose()
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return self.inner.count_tokens(messages, tools=list(tools))

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        return self.inner.remaining_tokens(messages, tools=list(tools))

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[valid-type,unused-ignore]
        return self.inner.capabilities  # type: ignore[no-any-return,unused-ignore]

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info
