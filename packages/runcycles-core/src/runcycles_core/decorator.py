"""User-facing entry points: the ``@cycles`` decorator, ``guard`` / ``reserve`` handles, and the
default clients they use when none is passed.

Parameter names follow the official SDK's decorator (``estimate``, ``actual``, ``action_kind``,
``action_name``, ``unit``, ``ttl_ms``, ``overage_policy``, the six subject fields, ``client``…),
so switching is a change of import. Differences that fix its defects: generator and async
generator functions are guarded for the whole stream (partial usage is committed when the
consumer stops early); a missing ``actual`` after the action ran commits the estimate tagged
``actual_source=estimate``; nested guards restore the outer context; the sync and async default
clients are separate, so the first call never decides the kind for the rest.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

from .client import AsyncCyclesClient, CyclesClient
from .config import CyclesConfig
from .errors import InsufficientBudgetError
from .lifecycle import AsyncGuard, Guard, GuardSpec, OutagePolicy
from .models import Action, Decision, ReservationCreateResponse, Subject
from .settlement import async_settler_for, settler_for

__all__ = [
    "aflush",
    "aguard",
    "areserve",
    "cycles",
    "default_async_client",
    "default_client",
    "flush",
    "guard",
    "reserve",
    "set_default_client",
    "set_default_config",
]

log = logging.getLogger("runcycles_core.decorator")

F = TypeVar("F", bound=Callable[..., Any])
Value = Any  # a constant, or a callable of the guarded function's arguments

_defaults_lock = threading.Lock()
_config: CyclesConfig | None = None
_sync_client: CyclesClient | None = None
_async_client: AsyncCyclesClient | None = None


def set_default_config(config: CyclesConfig) -> None:
    """Config for the lazily created default clients (replaces any default client)."""
    global _config, _sync_client, _async_client
    with _defaults_lock:
        _config, _sync_client, _async_client = config, None, None


def set_default_client(client: CyclesClient | AsyncCyclesClient) -> None:
    """Use ``client`` wherever no ``client=`` is given (sync and async defaults are separate)."""
    global _sync_client, _async_client
    with _defaults_lock:
        if isinstance(client, AsyncCyclesClient):
            _async_client = client
        else:
            _sync_client = client


def default_client() -> CyclesClient:
    """The default sync client: set explicitly, else built from the default config or
    ``CYCLES_*`` environment variables."""
    global _sync_client
    with _defaults_lock:
        if _sync_client is None:
            _sync_client = CyclesClient(_config or CyclesConfig.from_env())
        return _sync_client


def default_async_client() -> AsyncCyclesClient:
    """The default async client (see :func:`default_client`)."""
    global _async_client
    with _defaults_lock:
        if _async_client is None:
            _async_client = AsyncCyclesClient(_config or CyclesConfig.from_env())
        return _async_client


def _resolve(value: Value, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    return value(*args, **kwargs) if callable(value) else value


def build_spec(
    config: CyclesConfig,
    *,
    estimate: int,
    action_kind: str | None,
    action_name: str | None,
    action_tags: list[str] | None = None,
    unit: str = "USD_MICROCENTS",
    ttl_ms: int = 60_000,
    grace_period_ms: int | None = None,
    overage_policy: str | None = None,
    subject: Mapping[str, str | None] | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    shadow: bool = False,
    outage_policy: OutagePolicy | None = None,
    heartbeat: bool = True,
    **extra: Any,
) -> GuardSpec:
    """A :class:`GuardSpec` with the config's default subject filled in."""
    levels = {k: v for k, v in (subject or {}).items() if v}
    base = config.default_subject(**levels)
    if base is None:
        raise ValueError("no subject: pass tenant=… (or another level) or configure CYCLES_TENANT")
    subj = base.model_copy(update={"dimensions": dict(dimensions)}) if dimensions else base
    subj = Subject.model_validate(subj.model_dump(exclude_none=True))
    kwargs: dict[str, Any] = dict(extra)
    if idempotency_key is not None:
        kwargs["idempotency_key"] = idempotency_key
    return GuardSpec(
        subject=subj,
        action=Action(
            kind=action_kind or "unknown", name=action_name or "unknown", tags=action_tags or None
        ),
        estimate=estimate,
        unit=unit,
        ttl_ms=ttl_ms,
        grace_period_ms=grace_period_ms,
        overage_policy=overage_policy,
        metadata=metadata,
        # A call's own choice wins; otherwise the client's config decides.
        shadow=shadow or config.shadow,
        outage_policy=outage_policy or cast("OutagePolicy", config.outage_policy),
        heartbeat=heartbeat,
        **kwargs,
    )


_SUBJECT_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")


def _split(kwargs: dict[str, Any]) -> dict[str, Any]:
    subject = {k: kwargs.pop(k) for k in _SUBJECT_LEVELS if k in kwargs}
    kwargs["subject"] = subject
    return kwargs


def guard(estimate: int, *, client: CyclesClient | None = None, **options: Any) -> Guard:
    """A sync :class:`Guard` (not yet reserved): ``with guard(1_000, action_kind=…) as g: …``.

    Options are :func:`build_spec`'s keywords plus the subject fields ``tenant`` … ``toolset``.
    """
    c = client or default_client()
    return Guard(c, build_spec(c.config, estimate=estimate, **_split(dict(options))))


def aguard(estimate: int, *, client: AsyncCyclesClient | None = None, **options: Any) -> AsyncGuard:
    """Async twin of :func:`guard`: ``async with aguard(…) as g: …``."""
    c = client or default_async_client()
    return AsyncGuard(c, build_spec(c.config, estimate=estimate, **_split(dict(options))))


def reserve(estimate: int, *, client: CyclesClient | None = None, **options: Any) -> Guard:
    """Reserve now and return the handle, for callback-driven code:
    ``h = reserve(…)`` … ``h.commit(actual)`` or ``h.release()``."""
    return guard(estimate, client=client, **options).reserve()


async def areserve(
    estimate: int, *, client: AsyncCyclesClient | None = None, **options: Any
) -> AsyncGuard:
    """Async twin of :func:`reserve`."""
    return await aguard(estimate, client=client, **options).reserve()


def flush(client: CyclesClient | None = None, timeout: float | None = None) -> bool:
    """Drain pending settlements of ``client`` (default client) with a bounded wait."""
    return settler_for(client or default_client()).flush(timeout)


async def aflush(client: AsyncCyclesClient | None = None, timeout: float | None = None) -> bool:
    """Async twin of :func:`flush`."""
    return await async_settler_for(client or default_async_client()).flush(timeout)


def _commit_sync(g: Guard, actual: Value, value: Any, estimate_may_stand_in: bool = True) -> None:
    if actual is None or isinstance(actual, int):
        g.commit(actual)
        return
    try:
        amount = actual(value)
    except Exception as exc:
        if not estimate_may_stand_in:
            # No known actual and the estimate may not stand in: settle nothing, surface it.
            g.abandon(f"actual() raised {type(exc).__name__}")
            raise
        log.exception("actual() raised after the action ran; committing the estimate")
        g.commit()
        return
    g.commit(amount)


async def _commit_async(
    g: AsyncGuard, actual: Value, value: Any, estimate_may_stand_in: bool = True
) -> None:
    if actual is None or isinstance(actual, int):
        await g.commit(actual)
        return
    try:
        amount = actual(value)
    except Exception as exc:
        if not estimate_may_stand_in:
            await g.abandon(f"actual() raised {type(exc).__name__}")
            raise
        log.exception("actual() raised after the action ran; committing the estimate")
        await g.commit()
        return
    await g.commit(amount)


def _dry_run_result(resp: ReservationCreateResponse) -> ReservationCreateResponse:
    if resp.decision == Decision.DENY:
        raise InsufficientBudgetError(
            f"dry run denied: {resp.reason_code}",
            status=200,
            error_code=None,
            reason_code=resp.reason_code,
        )
    return resp


def cycles(
    estimate: int | Callable[..., int],
    *,
    actual: int | Callable[[Any], int] | None = None,
    action_kind: str | Callable[..., str | None] | None = None,
    action_name: str | Callable[..., str | None] | None = None,
    action_tags: list[str] | Callable[..., list[str] | None] | None = None,
    unit: str = "USD_MICROCENTS",
    ttl_ms: int = 60_000,
    grace_period_ms: int | None = None,
    overage_policy: str | None = None,
    dry_run: bool = False,
    tenant: Value = None,
    workspace: Value = None,
    app: Value = None,
    workflow: Value = None,
    agent: Value = None,
    toolset: Value = None,
    dimensions: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None,
    client: CyclesClient | AsyncCyclesClient | None = None,
    use_estimate_if_actual_not_provided: bool = True,
    shadow: bool = False,
    outage_policy: OutagePolicy | None = None,
    heartbeat: bool = True,
) -> Callable[[F], F]:
    """Guard a function with reserve → run → commit / release.

    ``estimate`` and the action/subject fields are constants or callables of the function's
    arguments; ``actual`` is a constant or a callable of its return value (for a generator:
    of the list of chunks it yielded). Without ``actual``, usage reported through
    ``get_cycles_context().add_usage()`` is committed, else the estimate (tagged
    ``actual_source=estimate``). An exception before the action reports usage releases the
    hold; a denial raises :class:`BudgetExceededError` before the function body runs.
    ``dry_run=True`` only evaluates: the function does not run and the decision is returned.
    """
    if actual is None and not use_estimate_if_actual_not_provided:
        raise ValueError("actual is required when use_estimate_if_actual_not_provided=False")
    subject_values = {
        "tenant": tenant,
        "workspace": workspace,
        "app": app,
        "workflow": workflow,
        "agent": agent,
        "toolset": toolset,
    }

    def spec_for(config: CyclesConfig, args: tuple[Any, ...], kwargs: dict[str, Any]) -> GuardSpec:
        est = _resolve(estimate, args, kwargs)
        return build_spec(
            config,
            estimate=est,
            action_kind=_resolve(action_kind, args, kwargs),
            action_name=_resolve(action_name, args, kwargs),
            action_tags=_resolve(action_tags, args, kwargs),
            unit=unit,
            ttl_ms=ttl_ms,
            grace_period_ms=grace_period_ms,
            overage_policy=overage_policy,
            subject={k: _resolve(v, args, kwargs) for k, v in subject_values.items()},
            dimensions=_resolve(dimensions, args, kwargs),
            shadow=shadow or dry_run,
            outage_policy=outage_policy,
            heartbeat=heartbeat and not dry_run,
        )

    def sync_client() -> CyclesClient:
        if client is None:
            return default_client()
        if not isinstance(client, CyclesClient):
            raise TypeError("a sync function needs a CyclesClient")
        return client

    def async_client() -> AsyncCyclesClient:
        if client is None:
            return default_async_client()
        if not isinstance(client, AsyncCyclesClient):
            raise TypeError("an async function needs an AsyncCyclesClient")
        return client

    def decorate(fn: F) -> F:
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                c = async_client()
                g = AsyncGuard(c, spec_for(c.config, args, kwargs))
                async with g:
                    chunks: list[Any] = []
                    inner = fn(*args, **kwargs)
                    try:
                        async for item in inner:
                            chunks.append(item)
                            g.mark_ran()
                            yield item
                    except BaseException:
                        if g.ran:
                            await _commit_async(
                                g, actual, chunks, use_estimate_if_actual_not_provided
                            )
                        raise
                    finally:
                        await inner.aclose()
                    await _commit_async(g, actual, chunks, use_estimate_if_actual_not_provided)

            return cast("F", agen_wrapper)

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                c = sync_client()
                g = Guard(c, spec_for(c.config, args, kwargs))
                with g:
                    chunks: list[Any] = []
                    inner = fn(*args, **kwargs)
                    try:
                        for item in inner:
                            chunks.append(item)
                            g.mark_ran()
                            yield item
                    except BaseException:
                        if g.ran:
                            _commit_sync(g, actual, chunks, use_estimate_if_actual_not_provided)
                        raise
                    finally:
                        inner.close()
                    _commit_sync(g, actual, chunks, use_estimate_if_actual_not_provided)

            return cast("F", gen_wrapper)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                c = async_client()
                g = AsyncGuard(c, spec_for(c.config, args, kwargs))
                if dry_run:
                    await g.reserve()
                    assert g.response is not None
                    return _dry_run_result(g.response)
                async with g:
                    result = await cast("Callable[..., Awaitable[Any]]", fn)(*args, **kwargs)
                    g.mark_ran()
                    await _commit_async(g, actual, result, use_estimate_if_actual_not_provided)
                return result

            return cast("F", async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            c = sync_client()
            g = Guard(c, spec_for(c.config, args, kwargs))
            if dry_run:
                g.reserve()
                assert g.response is not None
                return _dry_run_result(g.response)
            with g:
                result = fn(*args, **kwargs)
                g.mark_ran()
                _commit_sync(g, actual, result, use_estimate_if_actual_not_provided)
            return result

        return cast("F", sync_wrapper)

    return decorate
