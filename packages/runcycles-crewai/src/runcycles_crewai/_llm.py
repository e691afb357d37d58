"""``CyclesLLM``: any CrewAI LLM, budgeted.

Every call (each attempt of the agent's own retries included) is reserved before the inner LLM
is called and settled right after it: the change in the inner LLM's own usage counters
(``get_token_usage_summary().delta_since(before)``, which CrewAI keeps for every provider,
streaming included) is priced and committed; a call that raised is released. A denial raises
:class:`~runcycles_crewai.CrewBudgetExceeded`, which CrewAI lets out of ``kickoff()`` unchanged
and never retries.
"""

from __future__ import annotations

from typing import Any

from crewai import BaseLLM
from pydantic import PrivateAttr

from runcycles_core.plugin import (
    CyclesSettings,
    ModelCall,
    Received,
    amodel_guard,
    areserve_uncancellable,
    asettle_model_call,
    model_guard,
    settle_model_call,
)

from ._scope import current_run
from ._settings import resolve_settings
from ._usage import to_usage

__all__ = ["CyclesLLM"]


def _messages(messages: Any) -> list[object]:
    return [messages] if isinstance(messages, str) else list(messages or [])


def _received(out: Any) -> Received:
    # The answer as returned: what the kit counts when the provider reported no usage.
    received = Received()
    if out is not None:
        received.add(out if isinstance(out, str) else str(out))
    return received


class CyclesLLM(BaseLLM):
    """Wrap ``inner`` so every call reserves budget first and commits its priced usage.

    Args:
        inner: any ``crewai.BaseLLM`` (``crewai.LLM(...)``, a native provider, a custom one).
            Give each ``CyclesLLM`` its own inner LLM: the usage delta is read from the inner
            LLM's cumulative counters, which agents calling one instance in parallel would mix.
        settings: a :class:`~runcycles_core.plugin.CyclesSettings`; or pass its fields as
            keywords (``client=``, ``tenant=`` … ``toolset=``, ``estimate=``, ``shadow=``,
            ``outage_policy=``…).
        model / provider: what to price calls by (default: the inner LLM's ``model`` and
            ``provider``).

    ``get_token_usage_summary()`` and the capability queries are forwarded to ``inner``, so
    ``Crew.usage_metrics`` counts the wrapped agents' tokens.
    """

    inner: BaseLLM
    _settings: CyclesSettings = PrivateAttr()

    def __init__(
        self,
        inner: BaseLLM,
        settings: CyclesSettings | None = None,
        *,
        model: str | None = None,
        provider: str | None = None,
        **settings_kwargs: Any,
    ) -> None:
        name = model or getattr(inner, "model", None)
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"cannot tell which model {type(inner).__name__} calls; pass model= "
                "so its calls can be priced"
            )
        super().__init__(  # type: ignore[call-arg,unused-ignore]
            model=name,
            inner=inner,
            provider=provider or getattr(inner, "provider", None) or "openai",
            stop=list(getattr(inner, "stop", None) or []),
        )
        self._settings = resolve_settings(settings, settings_kwargs)

    @property
    def settings(self) -> CyclesSettings:
        """The settings every call is reserved with."""
        return self._settings

    # -- reserve / settle ----------------------------------------------------------------------
    def _call(self, messages: Any) -> ModelCall:
        run = current_run()
        if run is not None:
            # A tool hook's denial cannot stop the run; the next LLM call does, unreserved.
            run.raise_pending()
        max_tokens = self.inner.max_tokens
        return ModelCall(
            model=self.model,
            provider=self.provider,
            messages=_messages(messages),
            max_output_tokens=int(max_tokens) if max_tokens else None,
            subject=run.subject if run else None,
            dimensions=run.dimensions if run else None,
            metadata=run.metadata if run else None,
        )

    # -- BaseLLM -------------------------------------------------------------------------------
    def call(  # type: ignore[override,unused-ignore]
        self, messages: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """Reserve, call ``inner.call`` with every argument as given, commit or release."""
        call = self._call(messages)
        guard = model_guard(self._settings, call).reserve()
        before = self.inner.get_token_usage_summary()
        try:
            out = self.inner.call(messages, *args, **kwargs)
        except BaseException as exc:
            usage = to_usage(self.inner.get_token_usage_summary().delta_since(before))
            settle_model_call(guard, self._settings, call, usage=usage, error=exc)
            raise
        usage = to_usage(self.inner.get_token_usage_summary().delta_since(before))
        settle_model_call(guard, self._settings, call, usage=usage, received=_received(out))
        return out

    async def acall(  # type: ignore[override,unused-ignore]
        self, messages: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """Async :meth:`call`: ``inner.acall``, and the reservation settled on cancellation."""
        call = self._call(messages)
        guard = await areserve_uncancellable(amodel_guard(self._settings, call).reserve())
        assert guard is not None  # a plain model guard always returns itself
        before = self.inner.get_token_usage_summary()
        try:
            out = await self.inner.acall(messages, *args, **kwargs)
        except BaseException as exc:
            usage = to_usage(self.inner.get_token_usage_summary().delta_since(before))
            await asettle_model_call(guard, self._settings, call, usage=usage, error=exc)
            raise
        usage = to_usage(self.inner.get_token_usage_summary().delta_since(before))
        await asettle_model_call(guard, self._settings, call, usage=usage, received=_received(out))
        return out

    def get_token_usage_summary(self) -> Any:
        """The inner LLM's counters, so ``Crew.usage_metrics`` counts wrapped agents."""
        return self.inner.get_token_usage_summary()

    def supports_function_calling(self) -> bool:
        # Not declared on BaseLLM by every supported release, though every LLM has it.
        supports = getattr(self.inner, "supports_function_calling", None)
        return bool(supports()) if callable(supports) else False

    def supports_stop_words(self) -> bool:
        return bool(self.inner.supports_stop_words())

    def get_context_window_size(self) -> int:
        return int(self.inner.get_context_window_size())
