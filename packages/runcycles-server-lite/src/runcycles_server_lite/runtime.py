"""Runtime plane: the Cycles Protocol v0 endpoints under /v1.

Each mutation is one EVALSHA (``scripts/<name>.lua``) that validates, writes the ledger, the
reservation, the idempotency record and the stored response together, and returns the
response body already rendered; this module validates input, derives scopes and key names,
and maps script results onto HTTP. Reads (get, list, balances) are plain pipelined commands.

Every key a script is given is built here (keys.py) and carries the tenant's hash tag. Commit,
release, extend and expiry also touch the budget keys recorded on the reservation and a reserve
replay reads the reservation it created: those names were passed in KEYS when the reservation
was created and share the tenant's slot, so the scripts stay single-slot on Redis Cluster
without a read-before-write round trip.

Round trips per request (auth cache hit; a miss adds 3): every mutation 1 (EVALSHA), GET of a
reservation 1, list 2 (index + one pipelined read per 250 rows scanned), balances 2.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import auth as perms
from . import events, ledger, metrics
from .denials import denial_message
from .errors import ProtocolError, invalid
from .http import JSONResponse, raw_json_response, read_json, request_ids
from .keys import SUBJECT_LEVELS, UNITS
from .ledger import EVALUATION_IDEMPOTENCY_TTL_MS, UNITS_CSV
from .models import (
    CommitRequest,
    DecisionRequest,
    EventCreateRequest,
    ReleaseRequest,
    ReservationCreateRequest,
    ReservationExtendRequest,
    dumps,
    parse,
    payload_hash,
)
from .provisioning import check_tenant_id
from .scoping import (
    derive_scopes,
    new_event_id,
    new_reservation_id,
    reservation_tenant,
    segments_match,
)
from .services import Services, services
from .store import Store
from .sweeper import Sweeper

STATUSES = ("ACTIVE", "COMMITTED", "RELEASED", "EXPIRED")
SORT_KEYS = (
    "reservation_id",
    "tenant",
    "scope_path",
    "status",
    "reserved",
    "created_at_ms",
    "expires_at_ms",
)
MAX_PAGE = 200
_LIST_CHUNK = 250
_SPACE_OFFSET = re.compile(r" (\d{2}:?\d{2})$")
DEFAULT_PAGE = 50


# -- plumbing ---------------------------------------------------------------------------------


def _script_result(result: Any) -> Response:
    """Map a script's ``{"OK", status, body}`` / ``{"ERR", code, message, details}`` reply."""
    if not isinstance(result, list) or not result:
        raise ProtocolError("INTERNAL_ERROR", "unexpected store reply")
    if result[0] == "OK":
        return raw_json_response(result[2], status=int(result[1]))
    code, message = str(result[1]), str(result[2])
    details = orjson.loads(result[3]) if len(result) > 3 and result[3] else None
    raise ProtocolError(code, denial_message(code, message, details), details=details)


def _idempotency_header(request: Request, body_key: str) -> None:
    header = request.headers.get("x-idempotency-key")
    if header is not None and header != body_key:
        raise invalid("X-Idempotency-Key header does not match the body's idempotency_key")


def _check_subject_tenant(subject_tenant: str | None, tenant: str) -> None:
    # Case-sensitive, as the reference compares it.
    if subject_tenant is not None and subject_tenant != tenant:
        raise ProtocolError("FORBIDDEN", "subject.tenant does not match the API key's tenant")


def _reservation_id(request: Request) -> str:
    rid: str = request.path_params["reservation_id"]
    if not 1 <= len(rid) <= 128:
        raise invalid("reservation_id must be 1-128 characters")
    return rid


def _owner_for_tenant(rid: str, tenant: str) -> str:
    """The owning tenant of ``rid`` for a tenant caller: 404 unknown, 403 someone else's."""
    owner = reservation_tenant(rid)
    if owner is None:
        raise ProtocolError("NOT_FOUND", "reservation not found")
    if owner != tenant:
        raise ProtocolError("FORBIDDEN", "reservation belongs to another tenant")
    return owner


async def _caller_or_admin(request: Request, permission: str, rid: str) -> tuple[str, bool]:
    """(owning tenant, is_admin) for endpoints that accept X-Admin-API-Key."""
    svc = services(request)
    if svc.auth.is_admin(request):
        owner = reservation_tenant(rid)
        if owner is None:
            raise ProtocolError("NOT_FOUND", "reservation not found")
        return owner, True
    principal = await svc.auth.tenant(request, permission)
    return _owner_for_tenant(rid, principal.tenant), False


def _budget_keys(store: Store, tenant: str, scopes: list[str], unit: str) -> list[str]:
    return [store.keys.budget(tenant, s, unit) for s in scopes]


# -- reserve / decide / events ----------------------------------------------------------------


async def create_reservation(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.tenant(request, perms.RESERVATIONS_CREATE)
    req = parse(ReservationCreateRequest, await read_json(request))
    _idempotency_header(request, req.idempotency_key)
    tenant = principal.tenant
    _check_subject_tenant(req.subject.tenant, tenant)
    scopes = derive_scopes(req.subject)
    reply = await ledger.reserve(
        svc.store,
        ledger.Reserve(
            tenant=tenant,
            reservation_id=new_reservation_id(tenant),
            idempotency_key=req.idempotency_key,
            payload_hash=payload_hash(req),
            amount=req.estimate.amount,
            unit=req.estimate.unit,
            scopes=scopes,
            subject_json=dumps(req.subject),
            action_json=dumps(req.action),
            metadata_json=dumps(req.metadata),
            event_context=events.context(tenant),
            idempotency_ms=svc.settings.idempotency_ms,
            ttl_ms=req.ttl_ms,
            grace_ms=req.grace_period_ms,
            overage_policy=req.overage_policy,
            dry_run=req.dry_run,
        ),
    )
    metrics.record_decision("reserve", reply)
    return _script_result(reply)


async def decide(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.tenant(request, perms.RESERVATIONS_CREATE)
    req = parse(DecisionRequest, await read_json(request))
    _idempotency_header(request, req.idempotency_key)
    tenant = principal.tenant
    _check_subject_tenant(req.subject.tenant, tenant)
    scopes = derive_scopes(req.subject)
    k = svc.store.keys
    keys = [
        k.tenant(tenant),
        k.idempotency(tenant, "decide", req.idempotency_key),
        k.budgets(tenant),
        *_budget_keys(svc.store, tenant, scopes, req.estimate.unit),
    ]
    args: list[str | int] = [
        payload_hash(req),
        str(req.estimate.amount),
        req.estimate.unit,
        UNITS_CSV,
        str(EVALUATION_IDEMPOTENCY_TTL_MS),
        str(len(scopes)),
        *scopes,
    ]
    reply = await svc.store.run("decide", keys, args)
    metrics.record_decision("decide", reply)
    return _script_result(reply)


async def create_event(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.tenant(request, perms.RESERVATIONS_COMMIT)
    req = parse(EventCreateRequest, await read_json(request))
    _idempotency_header(request, req.idempotency_key)
    tenant = principal.tenant
    _check_subject_tenant(req.subject.tenant, tenant)
    scopes = derive_scopes(req.subject)
    k = svc.store.keys
    event_id = new_event_id()
    keys = [
        k.tenant(tenant),
        k.idempotency(tenant, "event", req.idempotency_key),
        k.event(tenant, event_id),
        k.budgets(tenant),
        *_budget_keys(svc.store, tenant, scopes, req.actual.unit),
        k.events(tenant),
    ]
    args: list[str | int] = [
        tenant,
        event_id,
        req.idempotency_key,
        payload_hash(req),
        str(req.actual.amount),
        req.actual.unit,
        req.overage_policy or "",
        dumps(req.subject),
        dumps(req.action),
        dumps(req.metrics),
        dumps(req.metadata),
        "" if req.client_time_ms is None else str(req.client_time_ms),
        str(svc.settings.finalized_retention_ms),
        UNITS_CSV,
        str(len(scopes)),
        *scopes,
        events.context(tenant),
    ]
    reply = await svc.store.run("event", keys, args)
    metrics.record_decision("event", reply)
    return _script_result(reply)


# -- commit / release / extend ----------------------------------------------------------------


async def commit_reservation(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.tenant(request, perms.RESERVATIONS_COMMIT)
    rid = _reservation_id(request)
    req = parse(CommitRequest, await read_json(request))
    _idempotency_header(request, req.idempotency_key)
    tenant = _owner_for_tenant(rid, principal.tenant)
    reply = await ledger.commit(
        svc.store,
        ledger.Commit(
            tenant=tenant,
            caller_tenant=principal.tenant,
            reservation_id=rid,
            idempotency_key=req.idempotency_key,
            payload_hash=payload_hash(req, extra={"reservation_id": rid}),
            amount=req.actual.amount,
            unit=req.actual.unit,
            metrics_json=dumps(req.metrics),
            metadata_json=dumps(req.metadata),
            event_context=events.context(tenant),
            retention_ms=svc.settings.finalized_retention_ms,
            idempotency_ms=svc.settings.idempotency_ms,
        ),
    )
    metrics.record_settlement("committed", reply)
    return _script_result(reply)


async def release_reservation(request: Request) -> Response:
    svc = services(request)
    rid = _reservation_id(request)
    tenant, as_admin = await _caller_or_admin(request, perms.RESERVATIONS_RELEASE, rid)
    req = parse(ReleaseRequest, await read_json(request))
    _idempotency_header(request, req.idempotency_key)
    k = svc.store.keys
    audit = ""
    if as_admin:
        request_id, trace_id = request_ids(request)
        audit = dumps(
            {
                "log_id": "log_" + uuid.uuid4().hex,
                "timestamp": datetime.now(timezone.utc).isoformat(),
                "tenant_id": tenant,
                "operation": "releaseReservation",
                "resource_type": "reservation",
                "resource_id": rid,
                "request_id": request_id,
                "trace_id": trace_id,
                "status": 200,
                "metadata": {"actor_type": "admin_on_behalf_of", "reason": req.reason},
            }
        )
    keys = [
        k.tenant(tenant),
        k.reservation(tenant, rid),
        k.reservation_expiry(tenant),
        k.audit(tenant),
        k.idempotency(tenant, "release", req.idempotency_key),
        k.events(tenant),
    ]
    args: list[str | int] = [
        tenant,
        req.idempotency_key,
        payload_hash(req, extra={"reservation_id": rid}),
        req.reason or "",
        "admin_on_behalf_of" if as_admin else "tenant",
        audit,
        str(svc.settings.finalized_retention_ms),
        str(svc.settings.idempotency_ms),
        events.context(tenant, actor=events.Actor("admin_on_behalf_of") if as_admin else None),
    ]
    reply = await svc.store.run("release", keys, args)
    metrics.record_settlement("released", reply)
    return _script_result(reply)


async def extend_reservation(request: Request) -> Response:
    svc = services(request)
    principal = await svc.auth.tenant(request, perms.RESERVATIONS_EXTEND)
    rid = _reservation_id(request)
    req = parse(ReservationExtendRequest, await read_json(request))
    _idempotency_header(request, req.idempotency_key)
    tenant = _owner_for_tenant(rid, principal.tenant)
    k = svc.store.keys
    keys = [
        k.tenant(tenant),
        k.reservation(tenant, rid),
        k.reservation_expiry(tenant),
        k.idempotency(tenant, f"extend:{rid}", req.idempotency_key),
    ]
    args: list[str | int] = [
        principal.tenant,
        str(req.extend_by_ms),
        payload_hash(req, extra={"reservation_id": rid}),
        dumps(req.metadata),
        str(svc.settings.idempotency_ms),
    ]
    return _script_result(await svc.store.run("extend", keys, args))


# -- reads ------------------------------------------------------------------------------------


def _fragment(text: str | None) -> orjson.Fragment | None:
    return orjson.Fragment(text) if text else None


def _affected(scope_path: str) -> list[str]:
    """The derived scopes of a scope path, tenant -> leaf (values never hold "/")."""
    segments = scope_path.split("/") if scope_path else []
    return ["/".join(segments[: i + 1]) for i in range(len(segments))]


# The finalized record layout (FIN in scripts/lib.lua), decoded into the ACTIVE hash's names.
_FIN = (
    "v",
    "status",
    "idempotency_key",
    "subject_json",
    "action_json",
    "metadata_json",
    "unit",
    "estimate",
    "scope_path",
    "created_at",
    "expires_at",
    "finalized_at",
    "charged",
    "committed_metadata_json",
    "settle_key",
    "settle_hash",
    "settle_bal",
    "release_reason",
    "released_by",
    "rexp",
    "rbal",
    "caps_json",
)
_UNESCAPE = re.compile(r"\\(.)")


def _unesc(s: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], s)


def decode_finalized(blob: str, tenant: str, reservation_id: str) -> dict[str, str]:
    """A finalized reservation record as the fields an ACTIVE record would have (empty
    values dropped, as a hash never held them)."""
    rec = dict(zip(_FIN, blob.split("\n"), strict=False))
    rec = {k: v for k, v in rec.items() if v != ""}
    rec["reservation_id"] = reservation_id
    rec["tenant"] = tenant
    status = rec.get("status", "")
    for name in ("idempotency_key", "settle_key", "release_reason"):
        if name in rec:
            rec[name] = _unesc(rec[name])
    if status == "EXPIRED" and "finalized_at" in rec:
        rec["expired_at"] = rec.pop("finalized_at")
    settle = {"COMMITTED": "commit", "RELEASED": "release"}.get(status)
    if settle:
        for part in ("key", "hash"):
            if f"settle_{part}" in rec:
                rec[f"{settle}_{part}"] = rec.pop(f"settle_{part}")
    return rec


async def read_reservations(store: Store, tenant: str, ids: list[str]) -> list[dict[str, str]]:
    """The records of ``ids`` that still exist, ACTIVE or finalized, in one round trip."""
    records, _ = await _fetch(store, tenant, ids)
    return records


async def read_reservation(store: Store, tenant: str, reservation_id: str) -> dict[str, str]:
    """The record of a reservation, ACTIVE or finalized; {} if there is none."""
    records, _ = await _fetch(store, tenant, [reservation_id])
    return records[0] if records else {}


def _render_reservation(rec: dict[str, str], include: Iterable[str]) -> dict[str, Any]:
    unit = rec.get("unit", "")
    status = rec.get("status", "")
    out: dict[str, Any] = {
        "reservation_id": rec["reservation_id"],
        "status": status,
        "idempotency_key": rec.get("idempotency_key"),
        "subject": _fragment(rec.get("subject_json")),
        "action": _fragment(rec.get("action_json")),
        "reserved": {"unit": unit, "amount": int(rec.get("estimate", "0"))},
        "created_at_ms": int(rec.get("created_at", "0")),
        "expires_at_ms": int(rec.get("expires_at", "0")),
        "scope_path": rec.get("scope_path", ""),
        "affected_scopes": _affected(rec.get("scope_path", "")),
    }
    if status == "COMMITTED" and rec.get("charged"):
        out["committed"] = {"unit": unit, "amount": int(rec["charged"])}
    if status in ("COMMITTED", "RELEASED") and rec.get("finalized_at"):
        out["finalized_at_ms"] = int(rec["finalized_at"])
    if "metadata" in include and rec.get("metadata_json"):
        out["metadata"] = _fragment(rec["metadata_json"])
    if "committed_metadata" in include and rec.get("committed_metadata_json"):
        out["committed_metadata"] = _fragment(rec["committed_metadata_json"])
    return {key: value for key, value in out.items() if value is not None}


async def get_reservation(request: Request) -> Response:
    svc = services(request)
    rid = _reservation_id(request)
    tenant, _ = await _caller_or_admin(request, perms.RESERVATIONS_LIST, rid)
    rec = await read_reservation(svc.store, tenant, rid)
    if not rec or "reservation_id" not in rec:
        raise ProtocolError("NOT_FOUND", "reservation not found")
    if rec.get("tenant") != tenant:
        raise ProtocolError("FORBIDDEN", "reservation belongs to another tenant")
    if rec.get("status") == "EXPIRED":
        raise ProtocolError("RESERVATION_EXPIRED", "reservation has expired")
    return JSONResponse(_render_reservation(rec, ("metadata", "committed_metadata")))


def _query_str(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value else None


def _limit(request: Request, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return DEFAULT_PAGE
    try:
        limit = int(raw)
    except ValueError:
        raise invalid("limit must be an integer") from None
    if not 1 <= limit <= maximum:
        raise invalid(f"limit must be between 1 and {maximum}")
    return limit


def _iso_ms(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    # An unencoded "+hh:mm" offset arrives as " hh:mm" after query-string decoding.
    raw = _SPACE_OFFSET.sub(r"+\1", raw)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(f"{name} must be an ISO 8601 date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _window(request: Request, lo: str, hi: str) -> tuple[int | None, int | None]:
    a, b = _iso_ms(request, lo), _iso_ms(request, hi)
    if a is not None and b is not None and a > b:
        raise invalid(f"{lo} must not be after {hi}")
    return a, b


def _encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _decode_cursor(raw: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise invalid("cursor is malformed") from None
    if not isinstance(data, dict):
        raise invalid("cursor is malformed")
    return data


def _in_window(value: int | None, window: tuple[int | None, int | None]) -> bool:
    lo, hi = window
    if lo is None and hi is None:
        return True
    if value is None:
        return False
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _sort_value(rec: dict[str, str], sort_by: str) -> Any:
    if sort_by == "reserved":
        return int(rec.get("estimate", "0"))
    if sort_by == "created_at_ms":
        return int(rec.get("created_at", "0"))
    if sort_by == "expires_at_ms":
        return int(rec.get("expires_at", "0"))
    field = {"reservation_id": "reservation_id", "tenant": "tenant"}.get(sort_by, sort_by)
    return rec.get(field, "")


async def _fetch(
    store: Store, tenant: str, ids: list[str]
) -> tuple[list[dict[str, str]], list[str]]:
    """(records, ids whose record has expired) for ``ids``, in one pipelined round trip."""
    if not ids:
        return [], []
    async with store.redis.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hgetall(store.keys.reservation(tenant, rid))
            pipe.get(store.keys.finalized(tenant, rid))
        replies: list[Any] = await pipe.execute()
    records: list[dict[str, str]] = []
    stale: list[str] = []
    for i, rid in enumerate(ids):
        active: dict[str, str] = replies[2 * i]
        blob: str | None = replies[2 * i + 1]
        if active:
            records.append(active)
        elif blob is not None:
            records.append(decode_finalized(blob, tenant, rid))
        else:
            stale.append(rid)
    return records, stale


async def list_reservations(request: Request) -> Response:
    svc = services(request)
    store = svc.store
    q = request.query_params
    if svc.auth.is_admin(request):
        tenant_param = _query_str(request, "tenant")
        if tenant_param is None:
            raise invalid("tenant query parameter is required when using admin key authentication")
        tenant = check_tenant_id(tenant_param)
    else:
        principal = await svc.auth.tenant(request, perms.RESERVATIONS_LIST)
        tenant = principal.tenant
        tenant_param = _query_str(request, "tenant")
        if tenant_param is not None and tenant_param != tenant:
            raise ProtocolError("FORBIDDEN", "tenant parameter does not match the API key's tenant")
    limit = _limit(request, MAX_PAGE)
    status = _query_str(request, "status")
    if status is not None and status not in STATUSES:
        raise invalid(f"status must be one of {', '.join(STATUSES)}")
    sort_by = _query_str(request, "sort_by")
    if sort_by is not None and sort_by not in SORT_KEYS:
        raise invalid(f"sort_by must be one of {', '.join(SORT_KEYS)}")
    sort_dir = _query_str(request, "sort_dir") or "desc"
    if sort_dir not in ("asc", "desc"):
        raise invalid("sort_dir must be asc or desc")
    order = sort_by or "created_at_ms"
    created = _window(request, "from", "to")
    expires = _window(request, "expires_from", "expires_to")
    finalized = _window(request, "finalized_from", "finalized_to")
    subject = {lvl: q[lvl] for lvl in SUBJECT_LEVELS[1:] if q.get(lvl)}
    idem_key = _query_str(request, "idempotency_key")
    include = {t.strip() for t in q.get("include", "").split(",") if t.strip()}
    filter_hash = hashlib.sha256(
        orjson.dumps(
            [tenant, status, subject, idem_key, created, expires, finalized, order, sort_dir],
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()[:16]
    after: tuple[Any, str] | None = None
    raw_cursor = _query_str(request, "cursor")
    if raw_cursor is not None:
        cur = _decode_cursor(raw_cursor)
        if cur.get("f") != filter_hash:
            raise invalid("cursor was issued for a different filter or sort")
        after = (cur.get("k"), str(cur.get("i", "")))

    def keep(rec: dict[str, str]) -> bool:
        if status is not None and rec.get("status") != status:
            return False
        if idem_key is not None and rec.get("idempotency_key") != idem_key:
            return False
        if not segments_match(rec.get("scope_path", ""), subject):
            return False
        finalized_at = rec.get("finalized_at")
        return (
            _in_window(int(rec.get("created_at", "0")), created)
            and _in_window(int(rec.get("expires_at", "0")), expires)
            and _in_window(
                int(finalized_at)
                if finalized_at and rec.get("status") in ("COMMITTED", "RELEASED")
                else None,
                finalized,
            )
        )

    desc = sort_dir == "desc"

    def beyond(rec: dict[str, str]) -> bool:
        if after is None:
            return True
        key = (_sort_value(rec, order), rec["reservation_id"])
        return key < after if desc else key > after

    # The created_at index is already in page order, so that path stops reading as soon as
    # the page is full; other sort orders have to look at every reservation of the tenant.
    streaming = order == "created_at_ms" and idem_key is None
    rows: list[dict[str, str]] = []
    stale: list[str] = []
    async with contextlib.aclosing(
        _candidates(store, tenant, idem_key, order, desc, after, stale)
    ) as chunks:
        async for chunk in chunks:
            rows += [rec for rec in chunk if keep(rec) and beyond(rec)]
            if streaming and len(rows) > limit:
                break
    if stale:
        # Finalized reservations outlive their retention only in the index: prune lazily.
        await store.redis.zrem(store.keys.reservation_index(tenant), *stale)
    rows.sort(key=lambda r: (_sort_value(r, order), r["reservation_id"]), reverse=desc)
    page = rows[:limit]
    body: dict[str, Any] = {
        "reservations": [_render_reservation(r, include) for r in page],
        "has_more": len(rows) > limit,
    }
    if len(rows) > limit:
        last = page[-1]
        body["next_cursor"] = _encode_cursor(
            {"f": filter_hash, "k": _sort_value(last, order), "i": last["reservation_id"]}
        )
    return JSONResponse(body)


async def _candidates(
    store: Store,
    tenant: str,
    idem_key: str | None,
    order: str,
    desc: bool,
    after: tuple[Any, str] | None,
    stale: list[str],
) -> AsyncGenerator[list[dict[str, str]], None]:
    """Chunks of reservation records that may match: the one behind an idempotency key, the
    created_at index in page order from the cursor on, or (other sort orders) every indexed
    reservation. Ids whose record is gone are appended to ``stale``."""
    if idem_key is not None:
        idem: str | None = await store.redis.get(
            store.keys.idempotency(tenant, "reserve", idem_key)
        )
        kind, _, rest = (idem or "").partition("\n")
        rid = rest.partition("\n")[2] if kind == "L" else None
        records, gone = await _fetch(store, tenant, [rid] if rid else [])
        stale += gone
        yield records
        return
    index = store.keys.reservation_index(tenant)
    if order == "created_at_ms":
        bound: Any = after[0] if after is not None and isinstance(after[0], int) else None
        offset = 0
        while True:
            if desc:
                top = "+inf" if bound is None else bound
                ids = await store.redis.zrevrangebyscore(
                    index, top, "-inf", start=offset, num=_LIST_CHUNK
                )
            else:
                bottom = "-inf" if bound is None else bound
                ids = await store.redis.zrangebyscore(
                    index, bottom, "+inf", start=offset, num=_LIST_CHUNK
                )
            if not ids:
                return
            offset += len(ids)
            records, gone = await _fetch(store, tenant, list(ids))
            stale += gone
            yield records
    ids = await store.redis.zrange(index, 0, -1)
    for start in range(0, len(ids), _LIST_CHUNK):
        records, gone = await _fetch(store, tenant, list(ids[start : start + _LIST_CHUNK]))
        stale += gone
        yield records


def _balance(rec: dict[str, str]) -> dict[str, Any]:
    unit = rec.get("unit", "")

    def amount(field: str) -> dict[str, Any]:
        return {"unit": unit, "amount": int(rec.get(field) or "0")}

    return {
        "scope": rec["scope"],
        "scope_path": rec["scope"],
        "remaining": amount("remaining"),
        "reserved": amount("reserved"),
        "spent": amount("spent"),
        "allocated": amount("allocated"),
        "debt": amount("debt"),
        "overdraft_limit": amount("overdraft_limit"),
        "is_over_limit": rec.get("is_over_limit") == "true",
    }


async def get_balances(request: Request) -> Response:
    """Union of the runtime (subject filters) and admin (tenant_id, scope_prefix, unit)
    definitions of GET /v1/balances; always scoped to the caller's tenant."""
    svc = services(request)
    store = svc.store
    principal = await svc.auth.tenant(request, perms.BALANCES_READ)
    tenant = principal.tenant
    q = request.query_params
    for name in ("tenant", "tenant_id"):
        given = _query_str(request, name)
        if given is not None and given != tenant:
            raise ProtocolError(
                "FORBIDDEN", f"{name} parameter does not match the API key's tenant"
            )
    subject = {lvl: q[lvl] for lvl in SUBJECT_LEVELS[1:] if q.get(lvl)}
    scope_prefix = _query_str(request, "scope_prefix")
    unit = _query_str(request, "unit")
    if unit is not None and unit not in UNITS:
        raise invalid(f"unit must be one of {', '.join(UNITS)}")
    if not (subject or scope_prefix or _query_str(request, "tenant") or q.get("tenant_id")):
        raise invalid(
            "at least one subject filter (tenant, workspace, app, workflow, agent, toolset) "
            "is required"
        )
    limit = _limit(request, MAX_PAGE)
    after: list[str] | None = None
    raw_cursor = _query_str(request, "cursor")
    if raw_cursor is not None:
        last = _decode_cursor(raw_cursor).get("m")
        if not (
            isinstance(last, list) and len(last) == 2 and all(isinstance(x, str) for x in last)
        ):
            raise invalid("cursor is malformed")
        after = last
    members: list[str] = await store.redis.zrange(store.keys.budgets(tenant), 0, -1)

    def keep(scope: str, member_unit: str) -> bool:
        if unit is not None and member_unit != unit:
            return False
        if scope_prefix is not None and not scope.startswith(scope_prefix.lower()):
            return False
        if after is not None and [scope, member_unit] <= after:
            return False
        return segments_match(scope, subject)

    # Scope order (tenant before its children), then unit.
    pairs = sorted(tuple(m.rpartition("|")[::2]) for m in members)
    matched = [p for p in pairs if keep(*p)][: limit + 1]
    page = matched[:limit]
    async with store.redis.pipeline(transaction=False) as pipe:
        for scope, member_unit in page:
            pipe.hgetall(store.keys.budget(tenant, scope, member_unit))
        records: list[dict[str, str]] = await pipe.execute()
    body: dict[str, Any] = {
        "balances": [_balance(r) for r in records if r and r.get("scope")],
        "has_more": len(matched) > limit,
    }
    if len(matched) > limit:
        body["next_cursor"] = _encode_cursor({"m": list(page[-1])})
    return JSONResponse(body)


# -- wiring -----------------------------------------------------------------------------------


def routes() -> list[BaseRoute]:
    """The runtime endpoints (evidence endpoints are not served)."""
    endpoint = Callable[[Request], Any]
    table: list[tuple[str, endpoint, list[str]]] = [
        ("/v1/reservations", create_reservation, ["POST"]),
        ("/v1/reservations", list_reservations, ["GET"]),
        ("/v1/reservations/{reservation_id}", get_reservation, ["GET"]),
        ("/v1/reservations/{reservation_id}/commit", commit_reservation, ["POST"]),
        ("/v1/reservations/{reservation_id}/release", release_reservation, ["POST"]),
        ("/v1/reservations/{reservation_id}/extend", extend_reservation, ["POST"]),
        ("/v1/decide", decide, ["POST"]),
        ("/v1/balances", get_balances, ["GET"]),
        ("/v1/events", create_event, ["POST"]),
    ]
    return [Route(path, fn, methods=methods) for path, fn, methods in table]


@contextlib.asynccontextmanager
async def background(svc: Services) -> AsyncIterator[None]:
    """Background jobs for the app's lifetime (the expiry sweeper)."""
    sweeper = Sweeper(svc.store, svc.settings)
    sweeper.start()
    try:
        yield
    finally:
        await sweeper.stop()
