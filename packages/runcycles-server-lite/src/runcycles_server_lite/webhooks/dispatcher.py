"""The webhook dispatcher: a background task, never on a request path.

Every ``webhook_interval_s`` the process holding the ``webhooks`` lease (so one dispatcher
runs however many workers or instances there are) does two things:

1. Fan-out. For each event stream that has subscribers, read the entries after the stream's
   dispatch cursor, create one PENDING delivery per matching ACTIVE subscription, and advance
   the cursor in the same transaction. A crash before the commit re-reads the same entries; a
   crash after it has the deliveries in Redis: at-least-once, and a restart resumes.
2. Delivery. For each owner, attempt its due deliveries in queue order (first attempts in
   event order), one at a time per owner, owners concurrently. Non-2xx or a transport error
   schedules a retry per the subscription's WebhookRetryPolicy; when retries run out the
   delivery is FAILED, ``system.webhook_delivery_failed`` is emitted, and after
   ``disable_after_failures`` consecutive failed deliveries the subscription is DISABLED
   with one ``webhook.disabled`` event. A delivery older than 24 h when picked up is FAILED
   as stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from runcycles_server_lite import events
from runcycles_server_lite._periodic import Periodic
from runcycles_server_lite.config import Settings
from runcycles_server_lite.events_api import find_event
from runcycles_server_lite.metrics import WEBHOOK_DELIVERIES
from runcycles_server_lite.store import Store

from . import deliveries as dl
from . import security
from . import subscriptions as subs
from .models import SecurityConfig

log = logging.getLogger("runcycles_server_lite.webhooks")

_FAN_OUT_BATCH = 200
_DELIVERIES_PER_TICK = 50
STALE_MS = 24 * 3600 * 1000
DELIVERY_RETENTION_MS = 14 * 24 * 3600 * 1000


def matches(sub: Mapping[str, str], stream_tenant: str, ev: Mapping[str, Any]) -> bool:
    """Whether event ``ev`` of ``stream_tenant``'s stream goes to subscription ``sub``."""
    if sub.get("status") != "ACTIVE":
        return False
    owner = sub.get("tenant_id")
    if owner != subs.SYSTEM and owner != stream_tenant:
        return False
    event_type = str(ev.get("event_type", ""))
    category = str(ev.get("category", ""))
    if event_type == "system.webhook_test":
        return False  # only ever sent by the test endpoint, to its one subscription
    if owner != subs.SYSTEM and category not in events.TENANT_CATEGORIES:
        return False  # invariant 2, re-checked at dispatch
    types, cats = subs.selectors(sub)
    if event_type not in types and category not in cats:
        return False
    pattern = sub.get("scope_filter")
    if pattern:
        scope = str(ev.get("scope") or "")
        if not scope:
            return False
        if "*" in pattern or "?" in pattern:
            if not fnmatch.fnmatchcase(scope, pattern):
                return False
        elif not scope.startswith(pattern):
            return False
    if event_type == "budget.threshold_crossed":
        conf = orjson.loads(sub["thresholds"]) if sub.get("thresholds") else {}
        wanted = conf.get("budget_utilization") or list(subs.DEFAULT_THRESHOLDS)
        threshold = float((ev.get("data") or {}).get("threshold", -1))
        if not any(abs(threshold - float(w)) < 1e-9 for w in wanted):
            return False
    return True


def backoff_ms(policy: Any, attempts: int) -> int:
    """Delay before retry number ``attempts`` (1-based)."""
    delay = policy.initial_delay_ms * (policy.backoff_multiplier ** (attempts - 1))
    return int(min(delay, policy.max_delay_ms))


class Dispatcher:
    """Runs :meth:`tick` periodically in a background task."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._periodic = Periodic(
            "runcycles-webhook-dispatcher", settings.webhook_interval_s, self.tick
        )
        self._token = secrets.token_hex(16)
        self._client: httpx.AsyncClient | None = None
        self._leased = False

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        # Only a process that took the lease gives it back, and never for long: the admin-only
        # listener never dispatches, and its store may already be gone when it shuts down (a
        # call to a stopped Redis would retry for tens of seconds).
        if self._leased:
            self._leased = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.store.run("unlock", [self.store.keys.lease("webhooks")], [self._token]),
                    timeout=2.0,
                )

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.settings.webhook_timeout_s, follow_redirects=False
            )
        return self._client

    async def _lease(self) -> bool:
        lease_ms = int(max(30.0, self.settings.webhook_timeout_s * 3) * 1000)
        held = await self.store.run(
            "lease", [self.store.keys.lease("webhooks")], [self._token, str(lease_ms)]
        )
        self._leased = int(held) == 1
        return self._leased

    async def tick(self) -> bool:
        """One fan-out and delivery pass; False if another process holds the lease."""
        if not await self._lease():
            return False
        owners = await subs.all_tenants(self.store)
        if not owners:
            return True
        by_owner = {o: await subs.list_for(self.store, [o]) for o in owners}
        system = [s for s in by_owner.get(subs.SYSTEM, []) if s.get("status") == "ACTIVE"]
        streams = set(owners)
        if system:
            streams |= set(await self.store.redis.zrange(self.store.keys.tenants(), 0, -1))
        for stream in sorted(streams):
            own = by_owner.get(stream, []) if stream != subs.SYSTEM else []
            await self._fan_out(stream, [*own, *system])
        config = await security.load(self.store)
        await asyncio.gather(*(self._deliver_due(o, config) for o in owners))
        return True

    # -- fan-out ----------------------------------------------------------------------------

    async def _fan_out(self, stream: str, candidates: list[dict[str, str]]) -> None:
        store = self.store
        cursor_key = subs.cursor_key(store, stream)
        cursor = await store.redis.get(cursor_key)
        if cursor is None:
            last = await store.redis.xrevrange(store.keys.events(stream), count=1)
            await store.redis.set(cursor_key, last[0][0] if last else "0-0", nx=True)
            return
        while True:
            entries = await store.redis.xrange(
                store.keys.events(stream), "(" + str(cursor), "+", count=_FAN_OUT_BATCH
            )
            if not entries:
                return
            now = await store.time_ms()
            per_owner: dict[str, list[dict[str, str]]] = {}
            for sid, fields in entries:
                body = fields.get("e")
                if not body:
                    continue
                ev = orjson.loads(events.render(stream, sid, body))
                for sub in candidates:
                    if matches(sub, stream, ev):
                        rec = dl.new_record(sub, ev, now, dl.new_delivery_id(sid))
                        per_owner.setdefault(sub["tenant_id"], []).append(rec)
            # Other owners' (system) deliveries first, then this stream's own together with
            # the cursor, each in one transaction of its own slot.
            for owner, recs in sorted(per_owner.items(), key=lambda kv: kv[0] == stream):
                async with store.redis.pipeline(transaction=True) as pipe:
                    for rec in recs:
                        dl.enqueue(pipe, store, owner, rec, now)
                    if owner == stream:
                        pipe.set(cursor_key, entries[-1][0])
                    await pipe.execute()
            if stream not in per_owner:
                await store.redis.set(cursor_key, entries[-1][0])
            cursor = entries[-1][0]
            if len(entries) < _FAN_OUT_BATCH:
                return

    # -- delivery ---------------------------------------------------------------------------

    async def _deliver_due(self, owner: str, config: SecurityConfig) -> None:
        store = self.store
        try:
            now = await store.time_ms()
            due: list[str] = await store.redis.zrangebyscore(
                dl.queue_key(store, owner), "-inf", now, start=0, num=_DELIVERIES_PER_TICK
            )
            for did in due:
                await self._attempt(owner, did, config)
        except Exception as exc:  # one owner's failure must not stop the others
            log.warning("webhook deliveries of %s failed: %s", owner, exc)

    async def _attempt(self, owner: str, did: str, config: SecurityConfig) -> None:
        store = self.store
        qkey = dl.queue_key(store, owner)
        dkey = dl.delivery_key(store, owner, did)
        rec: dict[str, str] = await store.redis.hgetall(dkey)
        if not rec:
            await store.redis.zrem(qkey, did)
            return
        sub: dict[str, str] = await store.redis.hgetall(
            subs.record_key(store, owner, rec["subscription_id"])
        )
        now = await store.time_ms()
        if not sub or sub.get("status") != "ACTIVE":
            why = "subscription was deleted" if not sub else f"subscription is {sub['status']}"
            await self._finish(owner, did, rec, "FAILED", now, error=why)
            return
        if now - int(rec.get("created_at") or now) > STALE_MS:
            await self._finish(owner, did, rec, "FAILED", now, error="stale: older than 24 h")
            await self._failed(owner, sub, rec, now, "stale delivery")
            return
        body = await find_event(store, rec["event_id"])
        if body is None:
            await self._finish(owner, did, rec, "FAILED", now, error="event no longer retained")
            return
        event = orjson.loads(body)
        attempt = await dl.send(self.client(), sub, body, event, config, store.secret_box)
        attempts = int(rec.get("attempts") or 0) + 1
        now = await store.time_ms()
        result: dict[str, str] = {"attempts": str(attempts), "attempted_at": str(now)}
        if attempt.status is not None:
            result["response_status"] = str(attempt.status)
        result["response_time_ms"] = str(attempt.elapsed_ms)
        skey = subs.record_key(store, owner, sub["subscription_id"])
        if attempt.ok:
            await self._finish(owner, did, rec, "SUCCESS", now, extra=result)
            await store.redis.hset(
                skey,
                mapping={
                    "consecutive_failures": "0",
                    "last_success_at": str(now),
                    "last_triggered_at": str(now),
                },
            )
            return
        policy = subs.retry_policy(sub)
        result["error_message"] = attempt.error or "delivery failed"
        if attempts <= policy.max_retries:
            due = now + backoff_ms(policy, attempts)
            result |= {"status": "RETRYING", "next_retry_at": str(due)}
            WEBHOOK_DELIVERIES.labels("RETRYING").inc()
            async with store.redis.pipeline(transaction=True) as pipe:
                pipe.hset(dkey, mapping=result)
                pipe.hdel(dkey, "completed_at")
                pipe.zadd(qkey, {did: due})
                pipe.hset(
                    skey, mapping={"last_failure_at": str(now), "last_triggered_at": str(now)}
                )
                await pipe.execute()
            return
        await self._finish(owner, did, rec, "FAILED", now, extra=result)
        await self._failed(owner, sub, rec, now, result["error_message"])

    async def _finish(
        self,
        owner: str,
        did: str,
        rec: Mapping[str, str],
        status: str,
        now: int,
        *,
        error: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        store = self.store
        dkey = dl.delivery_key(store, owner, did)
        fields = {**(extra or {}), "status": status, "completed_at": str(now)}
        WEBHOOK_DELIVERIES.labels(status).inc()
        if error is not None:
            fields["error_message"] = error
        async with store.redis.pipeline(transaction=True) as pipe:
            pipe.hset(dkey, mapping=fields)
            pipe.hdel(dkey, "next_retry_at")
            pipe.zrem(dl.queue_key(store, owner), did)
            pipe.pexpire(dkey, DELIVERY_RETENTION_MS)
            await pipe.execute()

    async def _failed(
        self, owner: str, sub: Mapping[str, str], rec: Mapping[str, str], now: int, error: str
    ) -> None:
        """A delivery is FAILED: the meta-alert, the failure count, maybe auto-disable."""
        store = self.store
        skey = subs.record_key(store, owner, sub["subscription_id"])
        ctx = events.context(owner, source=events.SOURCE_DISPATCHER, actor=events.SYSTEM_ACTOR)
        async with store.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(skey, "consecutive_failures", 1)
            pipe.hset(skey, mapping={"last_failure_at": str(now), "last_triggered_at": str(now)})
            events.xadd(
                pipe,
                store.keys.events(owner),
                "system.webhook_delivery_failed",
                ctx,
                data={
                    "component": "webhook_dispatcher",
                    "message": f"delivery {rec['delivery_id']} failed after all retries",
                    "severity": "warning",
                    "details": {
                        "subscription_id": sub["subscription_id"],
                        "delivery_id": rec["delivery_id"],
                        "event_id": rec.get("event_id"),
                        "error_message": error,
                    },
                },
            )
            failures, _, _ = await pipe.execute()
        limit = int(sub.get("disable_after_failures") or 10)
        if int(failures) >= limit and sub.get("status") in ("ACTIVE", "PAUSED"):
            batch = secrets.token_hex(6)
            await subs.set_status(
                store,
                sub,
                "DISABLED",
                "webhook.disabled",
                reason="consecutive_failures_exceeded_threshold",
                correlation_id=f"webhook_auto_disable:{sub['subscription_id']}:{batch}",
                source=events.SOURCE_DISPATCHER,
            )
