"""``CyclesClient`` and ``AsyncCyclesClient``: every runtime operation of the Cycles Protocol.

Each client owns one pooled ``httpx`` client. Methods take a typed request model, a dict, or
the request's fields as keyword arguments, and return typed response models; failures raise
(see :mod:`runcycles_core.errors`):

* a definite rejection raises a :class:`~runcycles_core.errors.CyclesProtocolError` subclass
  (every explicit denial is a :class:`~runcycles_core.errors.BudgetExceededError`);
* transport errors, timeouts, 5xx and 429 are retried with the same request and the same
  idempotency key (exponential backoff with jitter, ``Retry-After`` honoured) and finally raise
  :class:`~runcycles_core.errors.CyclesUnavailableError`.

These are the protocol primitives: they do not journal a commit or fall back to events on
expiry. That recovery belongs to the lifecycle layer built on top of them.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import httpx

from ._http import (
    API_KEY_HEADER,
    BALANCES_PATH,
    DECIDE_PATH,
    EVENTS_PATH,
    EVIDENCE_PATH,
    JWKS_PATH,
    RESERVATIONS_PATH,
    Call,
    give_up,
    interpret,
    log_retry,
    reservation_path,
    transport_failure,
)
from ._retry import Ambiguous, RetryBudget
from ._trace import resolve_trace
from .config import CyclesConfig
from .models import (
    Balance,
    BalanceResponse,
    CommitRequest,
    CommitResponse,
    CyclesEvidenceEnvelope,
    CyclesEvidenceJwks,
    CyclesModel,
    DecisionRequest,
    DecisionResponse,
    EventCreateRequest,
    EventCreateResponse,
    ReleaseRequest,
    ReleaseResponse,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendRequest,
    ReservationExtendResponse,
    ReservationListResponse,
    ReservationStatus,
    ReservationSummary,
    SortDirection,
    Subject,
)

__all__ = ["AsyncCyclesClient", "CyclesClient"]

T = TypeVar("T", bound=CyclesModel)
R = TypeVar("R", bound=CyclesModel)

try:
    _VERSION = version("runcycles-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    _VERSION = "0+unknown"

_SUBJECT_FILTERS = Subject.LEVELS

# Module-level so tests can observe the waits without slowing down.
_sleep = time.sleep
_async_sleep = asyncio.sleep
QueryValue = str | int | bool | datetime | ReservationStatus | SortDirection | list[str] | None


def _query_value(value: QueryValue) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("time filters must be timezone-aware datetimes")
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, (ReservationStatus, SortDirection)):
        return str(value.value)
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _query(params: Mapping[str, QueryValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in params.items():
        text = _query_value(value)
        if text is not None:
            out[name] = text
    return out


def _coerce(
    model: type[R],
    request: R | Mapping[str, Any] | None,
    fields: Mapping[str, Any],
    default_subject: Subject | None = None,
) -> R:
    """A request model from a model, a dict, or keyword fields (exactly one of them).

    Validation is strict: unknown fields or wrong types raise ``pydantic.ValidationError``.
    """
    if request is not None and fields:
        raise TypeError("pass either a request object or keyword fields, not both")
    if isinstance(request, model):
        return request
    if request is not None and not isinstance(request, Mapping):
        raise TypeError(f"expected {model.__name__} or a mapping, got {type(request).__name__}")
    data = dict(request if request is not None else fields)
    if "subject" in model.model_fields and data.get("subject") is None:
        if default_subject is None:
            raise ValueError("no subject given and the config has no default subject fields")
        data["subject"] = default_subject
    return model.model_validate(data)


_Self = TypeVar("_Self", bound="_Operations")

# Settings baked into the pooled httpx client; everything else may differ per view.
_POOL_FIELDS = frozenset({"base_url", "api_key", "user_agent", "extra_headers"})


# The attribute a client's settler lives under (runcycles_core.settlement puts it there).
SETTLER_ATTR = "_runcycles_settler"


class _Operations:
    """Builds the :class:`Call` for each operation; the sync/async subclasses send it."""

    config: CyclesConfig
    _owns_http: bool = True

    def _client_args(
        self,
        config: CyclesConfig | None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None,
    ) -> dict[str, Any]:
        self.config = config if config is not None else CyclesConfig.from_env()
        cfg = self.config
        headers = {
            API_KEY_HEADER: cfg.api_key,
            "User-Agent": cfg.user_agent or f"runcycles-core/{_VERSION}",
            "Accept": "application/json",
            **cfg.extra_headers,
        }
        args: dict[str, Any] = {
            "base_url": cfg.base_url,
            "headers": headers,
            "timeout": httpx.Timeout(
                connect=cfg.connect_timeout,
                read=cfg.read_timeout,
                write=cfg.write_timeout,
                pool=cfg.pool_timeout,
            ),
        }
        if transport is not None:
            args["transport"] = transport
        return args

    def _view(self: _Self, overrides: Mapping[str, Any]) -> _Self:
        fixed = sorted(_POOL_FIELDS & overrides.keys())
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot change on a shared connection pool")
        view = copy.copy(self)
        view.config = dataclasses.replace(self.config, **overrides)
        view._owns_http = False
        return view

    def subject(self, **levels: str | None) -> Subject:
        """The config's default subject with ``levels`` overriding it."""
        subject = self.config.default_subject(**levels)
        if subject is None:
            raise ValueError("no subject levels given and none configured")
        return subject

    # -- calls --------------------------------------------------------------------------------

    def _create_reservation_call(
        self,
        request: ReservationCreateRequest | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
    ) -> Call[ReservationCreateResponse]:
        body = _coerce(ReservationCreateRequest, request, fields, self.config.default_subject())
        return Call("POST", RESERVATIONS_PATH, ReservationCreateResponse, body=body)

    def _commit_call(
        self,
        reservation_id: str,
        request: CommitRequest | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
    ) -> Call[CommitResponse]:
        body = _coerce(CommitRequest, request, fields)
        return Call("POST", reservation_path(reservation_id, "commit"), CommitResponse, body=body)

    def _release_call(
        self,
        reservation_id: str,
        request: ReleaseRequest | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
    ) -> Call[ReleaseResponse]:
        body = _coerce(ReleaseRequest, request, fields)
        return Call("POST", reservation_path(reservation_id, "release"), ReleaseResponse, body=body)

    def _extend_call(
        self,
        reservation_id: str,
        request: ReservationExtendRequest | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
    ) -> Call[ReservationExtendResponse]:
        body = _coerce(ReservationExtendRequest, request, fields)
        path = reservation_path(reservation_id, "extend")
        return Call("POST", path, ReservationExtendResponse, body=body)

    def _decide_call(
        self, request: DecisionRequest | Mapping[str, Any] | None, fields: Mapping[str, Any]
    ) -> Call[DecisionResponse]:
        body = _coerce(DecisionRequest, request, fields, self.config.default_subject())
        return Call("POST", DECIDE_PATH, DecisionResponse, body=body)

    def _event_call(
        self, request: EventCreateRequest | Mapping[str, Any] | None, fields: Mapping[str, Any]
    ) -> Call[EventCreateResponse]:
        body = _coerce(EventCreateRequest, request, fields, self.config.default_subject())
        return Call("POST", EVENTS_PATH, EventCreateResponse, expected_status=201, body=body)

    def _evidence_call(self, evidence_id: str) -> Call[CyclesEvidenceEnvelope]:
        if not re.fullmatch(r"[0-9a-f]{64}", evidence_id):
            raise ValueError("evidence_id must be 64 lowercase hex characters")
        return Call("GET", f"{EVIDENCE_PATH}/{evidence_id}", CyclesEvidenceEnvelope)

    def _jwks_call(self) -> Call[CyclesEvidenceJwks]:
        return Call("GET", JWKS_PATH, CyclesEvidenceJwks)

    def _get_reservation_call(self, reservation_id: str) -> Call[ReservationDetail]:
        return Call("GET", reservation_path(reservation_id), ReservationDetail)

    def _list_call(self, params: Mapping[str, QueryValue]) -> Call[ReservationListResponse]:
        return Call("GET", RESERVATIONS_PATH, ReservationListResponse, params=_query(params))

    def _balances_call(self, params: Mapping[str, QueryValue]) -> Call[BalanceResponse]:
        query = _query(params)
        if not any(level in query for level in _SUBJECT_FILTERS):
            if not self.config.tenant:
                raise ValueError(
                    "get_balances needs a subject filter (tenant, workspace, app, workflow, "
                    "agent or toolset) and the config has no default tenant"
                )
            query["tenant"] = self.config.tenant
        return Call("GET", BALANCES_PATH, BalanceResponse, params=query)


def _list_params(
    *,
    idempotency_key: str | None,
    status: ReservationStatus | str | None,
    tenant: str | None,
    workspace: str | None,
    app: str | None,
    workflow: str | None,
    agent: str | None,
    toolset: str | None,
    from_: datetime | str | None,
    to: datetime | str | None,
    expires_from: datetime | str | None,
    expires_to: datetime | str | None,
    finalized_from: datetime | str | None,
    finalized_to: datetime | str | None,
    sort_by: str | None,
    sort_dir: SortDirection | str | None,
    include: list[str] | str | None,
    limit: int | None,
    cursor: str | None,
    extra: Mapping[str, QueryValue],
) -> dict[str, QueryValue]:
    params: dict[str, QueryValue] = {
        "idempotency_key": idempotency_key,
        "status": status,
        "tenant": tenant,
        "workspace": workspace,
        "app": app,
        "workflow": workflow,
        "agent": agent,
        "toolset": toolset,
        "from": from_,
        "to": to,
        "expires_from": expires_from,
        "expires_to": expires_to,
        "finalized_from": finalized_from,
        "finalized_to": finalized_to,
        "sort_by": sort_by,
        "sort_dir": sort_dir,
        "include": include,
        "limit": limit,
        "cursor": cursor,
    }
    params.update(extra)
    return params


class CyclesClient(_Operations):
    """Synchronous Cycles Protocol client over one pooled ``httpx.Client``.

    ``config`` defaults to :meth:`CyclesConfig.from_env`. ``transport`` is passed to httpx
    (e.g. ``httpx.MockTransport`` in tests, or a transport with custom TLS/proxy settings).
    Use as a context manager or call :meth:`close`. Safe to share between threads.

    Every method accepts ``traceparent=`` / ``trace_id=`` to correlate the call with the
    caller's trace; without them the trace set by :func:`runcycles_core.trace_context` is used.
    """

    def __init__(
        self, config: CyclesConfig | None = None, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = httpx.Client(**self._client_args(config, transport))

    def with_options(self, **overrides: Any) -> CyclesClient:
        """A client that shares this one's connection pool but uses other settings, e.g.
        ``client.with_options(retry_enabled=False)`` or ``read_timeout=1.0``. The pool's own
        settings (base_url, api_key, user_agent, extra_headers) cannot change. Closing the view
        does nothing; closing this client closes the pool for every view."""
        return self._view(overrides)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> CyclesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call[T], traceparent: str | None, trace_id: str | None) -> T:
        trace = resolve_trace(traceparent, trace_id)
        budget = RetryBudget(self.config.retry_policy)
        while True:
            budget.attempts += 1
            outcome: T | Ambiguous
            try:
                resp = self._http.send(call.build(self._http, trace, self.config))
            except httpx.TransportError as exc:
                outcome = transport_failure(call, exc, trace, self.config.base_url)
            else:
                outcome = interpret(call, resp, trace, budget.attempts)
            if not isinstance(outcome, Ambiguous):
                return outcome
            delay = budget.next_delay(outcome)
            if delay is None:
                raise give_up(call, outcome, budget.attempts, budget.spent, self.config)
            log_retry(call, outcome, budget.attempts, delay)
            _sleep(delay)

    # -- reservations -------------------------------------------------------------------------

    def create_reservation(
        self,
        request: ReservationCreateRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> ReservationCreateResponse:
        """``POST /v1/reservations``. A live denial raises a ``BudgetExceededError``; a dry run
        returns ``decision=DENY`` instead. ``subject`` defaults to the config's."""
        return self._send(self._create_reservation_call(request, fields), traceparent, trace_id)

    def commit_reservation(
        self,
        reservation_id: str,
        request: CommitRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> CommitResponse:
        """``POST /v1/reservations/{id}/commit``: charge the actual amount."""
        call = self._commit_call(reservation_id, request, fields)
        return self._send(call, traceparent, trace_id)

    def release_reservation(
        self,
        reservation_id: str,
        request: ReleaseRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> ReleaseResponse:
        """``POST /v1/reservations/{id}/release``: return the whole reservation."""
        call = self._release_call(reservation_id, request, fields)
        return self._send(call, traceparent, trace_id)

    def extend_reservation(
        self,
        reservation_id: str,
        request: ReservationExtendRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> ReservationExtendResponse:
        """``POST /v1/reservations/{id}/extend``: add ``extend_by_ms`` to the current expiry."""
        call = self._extend_call(reservation_id, request, fields)
        return self._send(call, traceparent, trace_id)

    def get_reservation(
        self, reservation_id: str, *, traceparent: str | None = None, trace_id: str | None = None
    ) -> ReservationDetail:
        """``GET /v1/reservations/{id}``. An expired reservation raises
        ``ReservationExpiredError`` (410), as the protocol specifies."""
        return self._send(self._get_reservation_call(reservation_id), traceparent, trace_id)

    def list_reservations(
        self,
        *,
        idempotency_key: str | None = None,
        status: ReservationStatus | str | None = None,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        from_: datetime | str | None = None,
        to: datetime | str | None = None,
        expires_from: datetime | str | None = None,
        expires_to: datetime | str | None = None,
        finalized_from: datetime | str | None = None,
        finalized_to: datetime | str | None = None,
        sort_by: str | None = None,
        sort_dir: SortDirection | str | None = None,
        include: list[str] | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **extra: QueryValue,
    ) -> ReservationListResponse:
        """``GET /v1/reservations``: one page. ``from_`` is the ``from`` query parameter;
        ``extra`` passes further query parameters through unchanged."""
        params = _list_params(
            idempotency_key=idempotency_key, status=status, tenant=tenant,
            workspace=workspace, app=app, workflow=workflow, agent=agent, toolset=toolset,
            from_=from_, to=to, expires_from=expires_from, expires_to=expires_to,
            finalized_from=finalized_from, finalized_to=finalized_to, sort_by=sort_by,
            sort_dir=sort_dir, include=include, limit=limit, cursor=cursor, extra=extra,
        )  # fmt: skip
        return self._send(self._list_call(params), traceparent, trace_id)

    def iter_reservations(
        self, *, page_size: int | None = None, **filters: Any
    ) -> Iterator[ReservationSummary]:
        """Every reservation matching ``filters`` (as for :meth:`list_reservations`), following
        ``next_cursor`` page by page until ``has_more`` is false."""
        cursor: str | None = filters.pop("cursor", None)
        while True:
            page = self.list_reservations(limit=page_size, cursor=cursor, **filters)
            yield from page.reservations
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    # -- budgets ------------------------------------------------------------------------------

    def decide(
        self,
        request: DecisionRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> DecisionResponse:
        """``POST /v1/decide``: would this estimate be allowed? Budget denials come back as
        ``decision=DENY`` with a ``reason_code``, not as exceptions."""
        return self._send(self._decide_call(request, fields), traceparent, trace_id)

    def get_balances(
        self,
        *,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        include_children: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **extra: QueryValue,
    ) -> BalanceResponse:
        """``GET /v1/balances``: one page. Without any subject filter the config's tenant is
        used (``ValueError`` if none is configured)."""
        params: dict[str, QueryValue] = {
            "tenant": tenant, "workspace": workspace, "app": app, "workflow": workflow,
            "agent": agent, "toolset": toolset, "include_children": include_children,
            "limit": limit, "cursor": cursor, **extra,
        }  # fmt: skip
        return self._send(self._balances_call(params), traceparent, trace_id)

    def iter_balances(self, *, page_size: int | None = None, **filters: Any) -> Iterator[Balance]:
        """Every balance matching ``filters`` (as for :meth:`get_balances`), all pages."""
        cursor: str | None = filters.pop("cursor", None)
        while True:
            page = self.get_balances(limit=page_size, cursor=cursor, **filters)
            yield from page.balances
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    def create_event(
        self,
        request: EventCreateRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> EventCreateResponse:
        """``POST /v1/events``: debit an actual amount without a reservation (201)."""
        return self._send(self._event_call(request, fields), traceparent, trace_id)

    # -- evidence (optional server feature) ---------------------------------------------------

    def get_evidence(
        self, evidence_id: str, *, traceparent: str | None = None, trace_id: str | None = None
    ) -> CyclesEvidenceEnvelope:
        """``GET /v1/evidence/{id}``: a signed evidence envelope. A 404 may mean "not signed
        yet" (signing is asynchronous). The signature is not verified here."""
        return self._send(self._evidence_call(evidence_id), traceparent, trace_id)

    def get_evidence_jwks(
        self, *, traceparent: str | None = None, trace_id: str | None = None
    ) -> CyclesEvidenceJwks:
        """``GET /v1/.well-known/cycles-jwks.json``: the evidence-signing keys."""
        return self._send(self._jwks_call(), traceparent, trace_id)

    # Aliases named after the operations, for readers coming from the spec.
    reserve = create_reservation
    commit = commit_reservation
    release = release_reservation
    extend = extend_reservation


class AsyncCyclesClient(_Operations):
    """Asynchronous twin of :class:`CyclesClient` over one pooled ``httpx.AsyncClient``.

    Use with ``async with`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        config: CyclesConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(**self._client_args(config, transport))

    def with_options(self, **overrides: Any) -> AsyncCyclesClient:
        """See :meth:`CyclesClient.with_options`."""
        return self._view(overrides)

    async def aclose(self) -> None:
        """Close the connection pool and stop this client's background settlement retries."""
        if self._owns_http:
            settler = self.__dict__.get(SETTLER_ATTR)
            if settler is not None:
                await settler.aclose()
            await self._http.aclose()

    async def __aenter__(self) -> AsyncCyclesClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call[T], traceparent: str | None, trace_id: str | None) -> T:
        trace = resolve_trace(traceparent, trace_id)
        budget = RetryBudget(self.config.retry_policy)
        while True:
            budget.attempts += 1
            outcome: T | Ambiguous
            try:
                resp = await self._http.send(call.build(self._http, trace, self.config))
            except httpx.TransportError as exc:
                outcome = transport_failure(call, exc, trace, self.config.base_url)
            else:
                outcome = interpret(call, resp, trace, budget.attempts)
            if not isinstance(outcome, Ambiguous):
                return outcome
            delay = budget.next_delay(outcome)
            if delay is None:
                raise give_up(call, outcome, budget.attempts, budget.spent, self.config)
            log_retry(call, outcome, budget.attempts, delay)
            await _async_sleep(delay)

    async def create_reservation(
        self,
        request: ReservationCreateRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> ReservationCreateResponse:
        """See :meth:`CyclesClient.create_reservation`."""
        call = self._create_reservation_call(request, fields)
        return await self._send(call, traceparent, trace_id)

    async def commit_reservation(
        self,
        reservation_id: str,
        request: CommitRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> CommitResponse:
        """See :meth:`CyclesClient.commit_reservation`."""
        call = self._commit_call(reservation_id, request, fields)
        return await self._send(call, traceparent, trace_id)

    async def release_reservation(
        self,
        reservation_id: str,
        request: ReleaseRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> ReleaseResponse:
        """See :meth:`CyclesClient.release_reservation`."""
        call = self._release_call(reservation_id, request, fields)
        return await self._send(call, traceparent, trace_id)

    async def extend_reservation(
        self,
        reservation_id: str,
        request: ReservationExtendRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> ReservationExtendResponse:
        """See :meth:`CyclesClient.extend_reservation`."""
        call = self._extend_call(reservation_id, request, fields)
        return await self._send(call, traceparent, trace_id)

    async def get_reservation(
        self, reservation_id: str, *, traceparent: str | None = None, trace_id: str | None = None
    ) -> ReservationDetail:
        """See :meth:`CyclesClient.get_reservation`."""
        return await self._send(self._get_reservation_call(reservation_id), traceparent, trace_id)

    async def list_reservations(
        self,
        *,
        idempotency_key: str | None = None,
        status: ReservationStatus | str | None = None,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        from_: datetime | str | None = None,
        to: datetime | str | None = None,
        expires_from: datetime | str | None = None,
        expires_to: datetime | str | None = None,
        finalized_from: datetime | str | None = None,
        finalized_to: datetime | str | None = None,
        sort_by: str | None = None,
        sort_dir: SortDirection | str | None = None,
        include: list[str] | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **extra: QueryValue,
    ) -> ReservationListResponse:
        """See :meth:`CyclesClient.list_reservations`."""
        params = _list_params(
            idempotency_key=idempotency_key, status=status, tenant=tenant,
            workspace=workspace, app=app, workflow=workflow, agent=agent, toolset=toolset,
            from_=from_, to=to, expires_from=expires_from, expires_to=expires_to,
            finalized_from=finalized_from, finalized_to=finalized_to, sort_by=sort_by,
            sort_dir=sort_dir, include=include, limit=limit, cursor=cursor, extra=extra,
        )  # fmt: skip
        return await self._send(self._list_call(params), traceparent, trace_id)

    async def iter_reservations(
        self, *, page_size: int | None = None, **filters: Any
    ) -> AsyncIterator[ReservationSummary]:
        """See :meth:`CyclesClient.iter_reservations`."""
        cursor: str | None = filters.pop("cursor", None)
        while True:
            page = await self.list_reservations(limit=page_size, cursor=cursor, **filters)
            for row in page.reservations:
                yield row
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    async def decide(
        self,
        request: DecisionRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> DecisionResponse:
        """See :meth:`CyclesClient.decide`."""
        return await self._send(self._decide_call(request, fields), traceparent, trace_id)

    async def get_balances(
        self,
        *,
        tenant: str | None = None,
        workspace: str | None = None,
        app: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        toolset: str | None = None,
        include_children: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **extra: QueryValue,
    ) -> BalanceResponse:
        """See :meth:`CyclesClient.get_balances`."""
        params: dict[str, QueryValue] = {
            "tenant": tenant, "workspace": workspace, "app": app, "workflow": workflow,
            "agent": agent, "toolset": toolset, "include_children": include_children,
            "limit": limit, "cursor": cursor, **extra,
        }  # fmt: skip
        return await self._send(self._balances_call(params), traceparent, trace_id)

    async def iter_balances(
        self, *, page_size: int | None = None, **filters: Any
    ) -> AsyncIterator[Balance]:
        """See :meth:`CyclesClient.iter_balances`."""
        cursor: str | None = filters.pop("cursor", None)
        while True:
            page = await self.get_balances(limit=page_size, cursor=cursor, **filters)
            for balance in page.balances:
                yield balance
            if not page.has_more or not page.next_cursor:
                return
            cursor = page.next_cursor

    async def create_event(
        self,
        request: EventCreateRequest | Mapping[str, Any] | None = None,
        /,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        **fields: Any,
    ) -> EventCreateResponse:
        """See :meth:`CyclesClient.create_event`."""
        return await self._send(self._event_call(request, fields), traceparent, trace_id)

    async def get_evidence(
        self, evidence_id: str, *, traceparent: str | None = None, trace_id: str | None = None
    ) -> CyclesEvidenceEnvelope:
        """See :meth:`CyclesClient.get_evidence`."""
        return await self._send(self._evidence_call(evidence_id), traceparent, trace_id)

    async def get_evidence_jwks(
        self, *, traceparent: str | None = None, trace_id: str | None = None
    ) -> CyclesEvidenceJwks:
        """See :meth:`CyclesClient.get_evidence_jwks`."""
        return await self._send(self._jwks_call(), traceparent, trace_id)

    reserve = create_reservation
    commit = commit_reservation
    release = release_reservation
    extend = extend_reservation
