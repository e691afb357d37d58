"""Webhook delivery records, the per-owner dispatch queue, and one signed HTTP attempt.

Layout (``T`` is the subscription's owning tenant; everything in T's slot)::

  P:{t:T}:whdel:<delivery_id>     HASH  WebhookDelivery record (kept 14 days once final)
  P:{t:T}:whdels:<subscription>   ZSET  delivery ids by creation ms (delivery logs)
  P:{t:T}:whq                     ZSET  delivery ids due for an attempt, by due ms

Delivery ids embed the event's stream position, so deliveries due at the same millisecond
are attempted in event order (per-tenant ordering of first attempts).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from runcycles_server_lite import events
from runcycles_server_lite.store import Store

from . import sealing, security
from .models import SecurityConfig
from .sealing import SecretBox


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runcycles-server-lite")
    except PackageNotFoundError:
        return "0"


USER_AGENT = f"runcycles-server-lite/{_version()}"
STATUSES = ("PENDING", "SUCCESS", "FAILED", "RETRYING")


def delivery_key(store: Store, tenant: str, did: str) -> str:
    return f"{store.keys.tag(tenant)}:whdel:{did}"


def log_key(store: Store, tenant: str, sid: str) -> str:
    return f"{store.keys.tag(tenant)}:whdels:{sid}"


def queue_key(store: Store, tenant: str) -> str:
    return f"{store.keys.tag(tenant)}:whq"


def new_delivery_id(entry_id: str) -> str:
    ms, seq = events.entry_key(entry_id)
    return f"del_{ms:012x}{seq:06x}{secrets.token_hex(6)}"


def new_record(
    sub: Mapping[str, str], event: Mapping[str, Any], now: int, did: str
) -> dict[str, str]:
    rec = {
        "delivery_id": did,
        "subscription_id": sub["subscription_id"],
        "event_id": str(event["event_id"]),
        "event_type": str(event["event_type"]),
        "status": "PENDING",
        "attempts": "0",
        "created_at": str(now),
        "attempted_at": str(now),
        "trace_flags": "01",
    }
    if event.get("trace_id"):
        rec["trace_id"] = str(event["trace_id"])
    return rec


def enqueue(pipe: Any, store: Store, owner: str, rec: Mapping[str, str], due: int) -> None:
    """Queue a new delivery on ``pipe`` (a transaction in the owner's slot)."""
    did = rec["delivery_id"]
    pipe.hset(delivery_key(store, owner, did), mapping=dict(rec))
    pipe.zadd(log_key(store, owner, rec["subscription_id"]), {did: int(rec["created_at"])})
    pipe.zadd(queue_key(store, owner), {did: due})


def wire(rec: Mapping[str, str]) -> dict[str, Any]:
    """A stored record as the spec's WebhookDelivery."""
    from runcycles_server_lite.admin.common import iso

    out: dict[str, Any] = {
        "delivery_id": rec["delivery_id"],
        "subscription_id": rec.get("subscription_id", ""),
        "event_id": rec.get("event_id", ""),
        "status": rec.get("status", "PENDING"),
        "attempted_at": iso(rec.get("attempted_at") or rec.get("created_at") or 0),
        "attempts": int(rec.get("attempts") or 0),
    }
    if rec.get("event_type"):
        out["event_type"] = rec["event_type"]
    for name in ("completed_at", "next_retry_at"):
        if rec.get(name):
            out[name] = iso(rec[name])
    for name in ("response_status", "response_time_ms"):
        if rec.get(name):
            out[name] = int(rec[name])
    for name in ("error_message", "trace_id", "trace_flags"):
        if rec.get(name):
            out[name] = rec[name]
    out["traceparent_inbound_valid"] = False
    return out


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one HTTP attempt."""

    ok: bool
    status: int | None
    elapsed_ms: int
    error: str | None


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>``, the X-Cycles-Signature value."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request_headers(
    sub: Mapping[str, str],
    body: bytes,
    event: Mapping[str, Any],
    flags: str = "01",
    *,
    secret: str | None = None,
) -> dict[str, str]:
    import orjson

    custom: dict[str, str] = {}
    if sub.get("headers"):
        try:
            custom = dict(orjson.loads(sub["headers"]))
        except orjson.JSONDecodeError:
            custom = {}
    trace_id = str(event.get("trace_id") or secrets.token_hex(16))
    headers = {
        **custom,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Cycles-Event-Id": str(event["event_id"]),
        "X-Cycles-Event-Type": str(event["event_type"]),
        "X-Cycles-Signature": signature(sub.get("secret", "") if secret is None else secret, body),
        "X-Cycles-Trace-Id": trace_id,
        # A fresh span of the event's trace, keeping its sampling decision.
        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-{flags}",
    }
    return headers


async def send(
    client: httpx.AsyncClient,
    sub: Mapping[str, str],
    body: bytes,
    event: Mapping[str, Any],
    config: SecurityConfig,
    box: SecretBox | None = None,
) -> Attempt:
    """POST ``body`` to the subscription's URL once (no redirects followed), after checking
    the URL's current DNS answer against the SSRF guard; signed with the subscription's
    secret, opened with ``box`` when it is sealed."""
    blocked = await security.check_url(sub.get("url", ""), config)
    if blocked is not None:
        return Attempt(False, None, 0, blocked)
    try:
        secret = sealing.open_secret(box, sub.get("secret", ""), sub.get("subscription_id", ""))
    except sealing.SecretUnavailable as exc:
        # Never sent unsigned: the receiver would reject it, or worse, accept it.
        return Attempt(False, None, 0, str(exc))
    start = time.monotonic()
    try:
        resp = await client.post(
            sub["url"], content=body, headers=request_headers(sub, body, event, secret=secret)
        )
    except httpx.HTTPError as exc:
        elapsed = int((time.monotonic() - start) * 1000)
        return Attempt(False, None, elapsed, f"{type(exc).__name__}: {exc}"[:500])
    elapsed = int((time.monotonic() - start) * 1000)
    if 200 <= resp.status_code < 300:
        return Attempt(True, resp.status_code, elapsed, None)
    return Attempt(False, resp.status_code, elapsed, f"HTTP {resp.status_code}")
