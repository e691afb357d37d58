"""The client-recovery profile at the durable level, one named test per catalog scenario.

Every test drives the lifecycle (``guard`` / ``@cycles`` / the settler) against the real
server-lite. Faults are injected by a transport that wraps the real one: it forwards a request to
the server and then loses the response, refuses to connect, answers in the server's place (429,
non-conformant 2xx), or "kills the process" (in-process: raises :class:`ProcessKilled`; across
processes: the child in ``recovery_child.py`` calls ``os._exit``). It records each request's
operation, idempotency key and body, so the tests assert the catalog's request choreography, and
the server's ledger shows whether the spend was applied exactly once.

A restart always builds a fresh client and settler; only the journal directory crosses over.
``recovery_adapter.py`` maps each scenario id to the tests here for the shared conformance runner;
:data:`CATALOG` is the scenario catalog they are bound to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runcycles_core as rc
from runcycles_core.decorator import aguard, cycles, guard, reserve
from runcycles_core.journal import _legacy_filename, record_filename
from runcycles_core.lifecycle import GuardState, HeartbeatFailure
from runcycles_core.settlement import _principal, async_settler_for, journal_for, settler_for
from runcycles_server_lite.testing import run, spawn, start_timeout, stop_group

from .recovery_adapter import MODULE, REPORT_ENV, SCENARIO_TESTS
from .recovery_child import EXIT_KILLED, op_of

CHILD = Path(__file__).with_name("recovery_child.py")
KIND = {"action_kind": "llm.completion", "action_name": "openai:gpt-4o"}
SETTLEMENT_OPS = ("commit", "event")


# -- the wire: records every request and injects faults -----------------------------------------


class ProcessKilled(BaseException):
    """The process "dies" at this request: nothing after it runs (in-process producers).

    A BaseException, so no ``except Exception`` on the way up can treat it as a failed attempt.
    """


@dataclass
class Seen:
    """One request as the client sent it, and what the client got back."""

    op: str
    key: str | None
    body: Any
    api_key: str | None
    at: float
    forwarded: bool = False
    status: int | None = None  # None: the client saw a transport error (or the process died)


Respond = Callable[[httpx.Request, "httpx.Response | None"], httpx.Response]


@dataclass
class Fault:
    """What to do with one request: forward it first or not, then answer (or raise)."""

    forward: bool
    respond: Respond


def lose_response() -> Fault:
    """The server applies the request; the response never arrives."""

    def respond(request: httpx.Request, upstream: httpx.Response | None) -> httpx.Response:
        raise httpx.ReadTimeout("response lost", request=request)

    return Fault(True, respond)


def refuse() -> Fault:
    """The request never reaches the server."""

    def respond(request: httpx.Request, upstream: httpx.Response | None) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return Fault(False, respond)


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Fault:
    """Someone (a proxy, a rate limiter) answers instead of the server."""

    def respond(request: httpx.Request, upstream: httpx.Response | None) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return Fault(False, respond)


def mangle(fn: Callable[[httpx.Response], httpx.Response]) -> Fault:
    """The server applies the request; the client gets ``fn(real response)`` instead."""

    def respond(request: httpx.Request, upstream: httpx.Response | None) -> httpx.Response:
        assert upstream is not None
        return fn(upstream)

    return Fault(True, respond)


def crash(forward: bool = False) -> Fault:
    """The process dies while this request is in flight (after it left, if ``forward``)."""

    def respond(request: httpx.Request, upstream: httpx.Response | None) -> httpx.Response:
        raise ProcessKilled(request.url.path)

    return Fault(forward, respond)


class Wire:
    """Shared by a client's transport: the request log and the scripted faults per operation."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.observers: list[Callable[[Seen], None]] = []
        self._lock = threading.Lock()

    def fail(self, op: str, *faults: Fault) -> Wire:
        """Apply ``faults`` to the next requests of ``op``, one each, in order."""
        self.faults[op].extend(faults)
        return self

    def begin(self, request: httpx.Request) -> tuple[Seen, Fault | None]:
        seen = Seen(
            op=op_of(request),
            key=request.headers.get("x-idempotency-key"),
            body=json.loads(request.content) if request.content else None,
            api_key=request.headers.get("x-cycles-api-key"),
            at=time.time(),
        )
        with self._lock:
            self.seen.append(seen)
            queue = self.faults.get(seen.op)
            fault = queue.pop(0) if queue else None
        for observe in self.observers:
            observe(seen)
        return seen, fault

    def of(self, *ops: str) -> list[Seen]:
        return [s for s in self.seen if s.op in ops]

    def choreography(self) -> list[str]:
        """The settlement-relevant operations in order (what the catalog's lists describe)."""
        return [s.op for s in self.seen if s.op in ("commit", "event", "extend", "release")]


class WireTransport(httpx.BaseTransport):
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        seen, fault = self.wire.begin(request)
        upstream: httpx.Response | None = None
        if fault is None or fault.forward:
            upstream = self.inner.handle_request(request)
            upstream.read()
            seen.forwarded = True
            if fault is None:
                seen.status = upstream.status_code
                return upstream
        assert fault is not None
        response = fault.respond(request, upstream)
        seen.status = response.status_code
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncWireTransport(httpx.AsyncBaseTransport):
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen, fault = self.wire.begin(request)
        upstream: httpx.Response | None = None
        if fault is None or fault.forward:
            upstream = await self.inner.handle_async_request(request)
            await upstream.aread()
            seen.forwarded = True
            if fault is None:
                seen.status = upstream.status_code
                return upstream
        assert fault is not None
        response = fault.respond(request, upstream)
        seen.status = response.status_code
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- tenants on the real server ------------------------------------------------------------------


@dataclass
class Tenant:
    """A fresh tenant on the shared server-lite, with its journal in the test's tmp dir."""

    server: Any
    config: rc.CyclesConfig
    allocated: int
    _clients: list[rc.CyclesClient] = field(default_factory=list)

    @property
    def name(self) -> str:
        assert self.config.tenant is not None
        return self.config.tenant

    def cfg(self, **overrides: Any) -> rc.CyclesConfig:
        return dataclasses.replace(self.config, **overrides)

    def client(self, wire: Wire | None = None, **overrides: Any) -> rc.CyclesClient:
        """A new client (a new process's worth of state) whose traffic goes through ``wire``."""
        transport = WireTransport(wire) if wire is not None else None
        c = rc.CyclesClient(self.cfg(**overrides), transport=transport)
        self._clients.append(c)
        return c

    def aclient(self, wire: Wire, **overrides: Any) -> rc.AsyncCyclesClient:
        return rc.AsyncCyclesClient(self.cfg(**overrides), transport=AsyncWireTransport(wire))

    def ledger(self) -> dict[str, int]:
        """The tenant-level balance, read straight from the server."""
        with rc.CyclesClient(self.config) as c:
            for b in c.get_balances(tenant=self.name).balances:
                if b.scope == f"tenant:{self.name}":
                    return {
                        "remaining": b.remaining.amount,
                        "reserved": b.reserved.amount if b.reserved else 0,
                        "spent": b.spent.amount if b.spent else 0,
                    }
        raise AssertionError(f"no tenant balance for {self.name}")

    def status(self, reservation_id: str) -> rc.ReservationStatus:
        with rc.CyclesClient(self.config) as c:
            try:
                return c.get_reservation(reservation_id).status
            except rc.ReservationExpiredError:
                return rc.ReservationStatus.EXPIRED

    def settles_as_expired(self, reservation_id: str) -> bool:
        """True once the server's sweeper has expired the reservation (it was never committed);
        False if it ends in any other state."""
        deadline = time.monotonic() + 10
        while (status := self.status(reservation_id)) is rc.ReservationStatus.ACTIVE:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return status is rc.ReservationStatus.EXPIRED

    def journal_files(self, config: rc.CyclesConfig | None = None) -> dict[str, dict[str, Any]]:
        """The pending records on disk, by file name (read raw, no journal logic)."""
        part = journal_for(config or self.config).path
        return {p.name: json.loads(p.read_bytes()) for p in sorted(part.glob("v2-*.json"))}

    def close(self) -> None:
        for c in self._clients:
            c.close()


MakeTenant = Callable[..., Tenant]


@pytest.fixture
def tenant(server: Any, tmp_path: Path) -> Iterator[MakeTenant]:
    made: list[Tenant] = []

    def make(budget: int = 100_000, **config: Any) -> Tenant:
        name = "cr" + secrets.token_hex(5)
        key = server.provision(name, {"": budget})
        values: dict[str, Any] = {
            "base_url": server.base_url,
            "api_key": key,
            "tenant": name,
            "retry_initial_delay": 0.01,
            "retry_max_delay": 0.05,
            "retry_jitter": 0.0,
            "journal_dir": str(tmp_path / "journal"),
        }
        values.update(config)
        t = Tenant(server, rc.CyclesConfig(**values), budget)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def wait_past_expiry(expires_at_ms: int | None, margin_s: float = 0.3) -> None:
    assert expires_at_ms is not None
    time.sleep(max(0.0, expires_at_ms / 1000 - time.time()) + margin_s)


@dataclass
class Produced:
    """A lifecycle whose process died at its first settlement request, leaving a journal."""

    reservation_id: str
    key: str
    expires_at_ms: int | None
    wire: Wire


def die_at_first(
    op: str,
    t: Tenant,
    *,
    actual: int,
    estimate: int = 1_000,
    forward: bool = False,
    wire: Wire | None = None,
    client_options: dict[str, Any] | None = None,
    **guard_options: Any,
) -> Produced:
    """Run one guarded action whose process dies on its first ``op`` request (in-process:
    :class:`ProcessKilled` unwinds it; no background settler was ever started)."""
    wire = (wire or Wire()).fail(op, crash(forward))
    client = t.client(wire, **(client_options or {}))
    with pytest.raises(ProcessKilled), guard(estimate, client=client, **KIND, **guard_options) as g:
        g.add_usage(actual)
    client.close()  # the dead process never sends anything again
    settlement = wire.of(op)
    assert len(settlement) == 1, "the process died at its first settlement request"
    key = settlement[0].key
    assert key is not None
    rid = g.reservation_id or f"event:{key}"
    return Produced(rid, key, g.expires_at_ms, wire)


def run_child(plan: dict[str, Any], *, expect_exit: int) -> dict[str, Any]:
    proc = run(
        [sys.executable, str(CHILD), json.dumps(plan)],
        capture_output=True,
        text=True,
        timeout=start_timeout(),
    )
    assert proc.returncode == expect_exit, proc.stderr
    evidence: dict[str, Any] = json.loads(Path(plan["evidence"]).read_text())
    return evidence


def child_config(cfg: rc.CyclesConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def assert_event_carries_original(event: Seen, spec_reserve: Seen, actual: int, key: str) -> None:
    body = event.body
    assert event.key == key
    assert body["idempotency_key"] == key
    assert body["subject"] == spec_reserve.body["subject"]
    assert body["action"] == spec_reserve.body["action"]
    assert body["actual"] == {"unit": "USD_MICROCENTS", "amount": actual}
    assert body["metrics"]["latency_ms"] >= 0
    assert body["metadata"]["actual_source"] == "consumed"


# -- CR-CORE-001 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lost", [1, 2], ids=["retried-in-call", "retried-by-settler"])
def test_cr_core_001_lost_commit_response_reuses_key(tenant: MakeTenant, lost: int) -> None:
    """commit → commit_same_key: the lost commit is retried with the original key, once applied.

    With one loss the client's same-key retry recovers it within the call; with two (its retry
    budget is one) the settlement stays pending in the journal and the settler's background
    retry recovers it.
    """
    t = tenant()
    wire = Wire().fail("commit", *[lose_response() for _ in range(lost)])
    client = t.client(wire, retry_max_attempts=1)
    with guard(1_000, client=client, **KIND) as g:
        g.add_usage(420)
    assert g.settlement is not None
    assert g.settlement.settled is (lost == 1)
    assert settler_for(client).flush(timeout=10)

    commits = wire.of("commit")
    assert wire.choreography() == ["commit"] * (lost + 1)
    # retry_uses_original_idempotency_key: header and body carry the first attempt's key.
    assert commits[0].key == f"{g.spec.idempotency_key}:commit"
    assert {c.key for c in commits} == {commits[0].key}
    assert {c.body["idempotency_key"] for c in commits} == {commits[0].key}
    assert [c.forwarded for c in commits] == [True] * (lost + 1)
    assert [c.status for c in commits] == [None] * lost + [200]
    # settlement_occurs_at_most_once: every attempt reached the server, the spend landed once.
    assert t.ledger() == {"remaining": t.allocated - 420, "reserved": 0, "spent": 420}
    assert t.status(g.reservation_id or "") is rc.ReservationStatus.COMMITTED
    assert t.journal_files() == {}


def test_cr_core_001_lost_commit_response_reuses_key_async(tenant: MakeTenant) -> None:
    """The async lifecycle: lost responses, same key, settled once."""
    t = tenant()
    wire = Wire().fail("commit", lose_response(), lose_response())

    async def main() -> rc.AsyncGuard:
        async with t.aclient(wire, retry_max_attempts=1) as client:
            async with aguard(1_000, client=client, **KIND) as g:
                g.add_usage(99)
            assert g.settlement is not None
            assert g.settlement.pending
            assert await async_settler_for(client).flush(timeout=10)
            return g

    g = asyncio.run(main())
    commits = wire.of("commit")
    assert wire.choreography() == ["commit"] * 3
    assert {c.key for c in commits} == {f"{g.spec.idempotency_key}:commit"}
    assert [c.status for c in commits] == [None, None, 200]
    assert t.ledger()["spent"] == 99
    assert t.journal_files() == {}


def test_aclose_stops_the_retry_task_and_keeps_the_record(tenant: MakeTenant) -> None:
    """Closing an async client with a settlement still pending cancels its retry task (no
    task outlives the loop) and leaves the record journaled; a later client settles it."""
    t = tenant()
    wire = Wire().fail("commit", *(lose_response() for _ in range(20)))
    seen_tasks: list[asyncio.Task[None]] = []

    async def main() -> rc.AsyncGuard:
        client = t.aclient(wire, retry_max_attempts=1)
        async with aguard(1_000, client=client, **KIND) as g:
            g.add_usage(55)
        assert g.settlement is not None
        assert g.settlement.pending
        seen_tasks.extend(async_settler_for(client)._tasks)
        assert seen_tasks, "a pending settlement leaves a retry task"
        await client.aclose()
        assert all(task.done() for task in seen_tasks)
        return g

    asyncio.run(main())
    assert len(t.journal_files()) == 1
    wire.faults.clear()

    async def later() -> None:
        async with t.aclient(wire) as client:
            assert await async_settler_for(client).flush(timeout=10)

    asyncio.run(later())
    assert t.ledger()["spent"] == 55
    assert t.journal_files() == {}


# -- CR-CORE-002 ---------------------------------------------------------------------------------


def test_cr_core_002_expired_commit_falls_back_to_event(tenant: MakeTenant) -> None:
    """commit (410 RESERVATION_EXPIRED) → event with the same key, carrying the original
    subject, action and actual; the spend is applied once, as the event."""
    t = tenant()
    wire = Wire()
    client = t.client(wire)
    with guard(1_000, client=client, ttl_ms=1_000, grace_period_ms=0, heartbeat=False, **KIND) as g:
        g.add_usage(77)
        wait_past_expiry(g.expires_at_ms)
    assert g.settlement is not None
    assert g.settlement.settled
    assert g.settlement.via_event

    commit, event = wire.of("commit", "event")
    assert wire.choreography() == ["commit", "event"]
    assert (commit.status, event.status) == (410, 201)
    key = f"{g.spec.idempotency_key}:commit"
    assert commit.key == key
    # event_carries_original_subject_action_actual (and the original key and metrics).
    assert_event_carries_original(event, wire.of("reserve")[0], 77, key)
    assert event.body["metrics"] == commit.body["metrics"]
    assert event.body["metadata"]["recovered_reservation_id"] == g.reservation_id
    # settlement_occurs_at_most_once: the reservation expired uncommitted, the event charged.
    assert t.settles_as_expired(g.reservation_id or "")
    assert t.ledger()["spent"] == 77
    assert t.journal_files() == {}


# -- CR-CORE-003 ---------------------------------------------------------------------------------


def test_cr_core_003_heartbeat_transport_failure_is_observable_and_non_fatal(
    tenant: MakeTenant, caplog: pytest.LogCaptureFixture
) -> None:
    """extend (transport error) → extend with the same key → commit, under the warn policy.

    The first extend reaches the server but its response is lost (a read timeout); the
    heartbeat reports the failure (reservation id, "retry") and retries with the same key on
    the lead-based schedule, which the server answers from its idempotency record. The action
    never notices and is settled.
    """
    t = tenant()
    wire = Wire().fail("extend", lose_response())
    client = t.client(wire, read_timeout=0.5)
    failures: list[HeartbeatFailure] = []
    progress: list[str] = []
    with (
        caplog.at_level(logging.WARNING, logger="runcycles_core.lifecycle"),
        guard(
            1_000, client=client, ttl_ms=5_000, on_heartbeat_failure=failures.append, **KIND
        ) as g,
    ):
        first_expiry = g.expires_at_ms
        # The guarded action keeps working through the failure and the recovery.
        wait_until(lambda: any(s.status == 200 for s in wire.of("extend")), timeout=10)
        assert g.state is GuardState.HELD
        progress.append("still running")
        g.add_usage(123)

    extends = wire.of("extend")
    assert wire.choreography() == ["extend", "extend", "commit"]
    assert {e.key for e in extends} == {f"{g.spec.idempotency_key}:extend:0"}
    assert [(e.forwarded, e.status) for e in extends] == [(True, None), (True, 200)]
    # heartbeat_failure_reports_reservation_and_disposition
    assert len(failures) == 1, failures
    failure = failures[0]
    assert failure.reservation_id == g.reservation_id
    assert failure.disposition == "retry"
    assert failure.retry_in_ms is not None
    assert 0 < failure.retry_in_ms <= 1_000
    assert isinstance(failure.error, rc.CyclesTransportError)
    logged = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()]
    assert any(g.reservation_id in m and "retrying with the same key" in m for m in logged)
    # guarded_action_continues_under_warn_policy
    assert progress == ["still running"]
    assert g.expires_at_ms is not None
    assert first_expiry is not None
    assert g.expires_at_ms > first_expiry
    # final_settlement_is_attempted
    assert g.settlement is not None
    assert g.settlement.settled
    assert t.ledger() == {"remaining": t.allocated - 123, "reserved": 0, "spent": 123}


# -- CR-CORE-004 ---------------------------------------------------------------------------------

NONCONFORMANT: dict[str, Callable[[httpx.Response], httpx.Response]] = {
    # 200 but not a CommitResponse (no "charged").
    "invalid-body": lambda up: httpx.Response(200, json={"status": "COMMITTED"}),
    # The real, valid body under a status the operation never returns.
    "wrong-status": lambda up: httpx.Response(202, content=up.content, headers=up.headers),
    # 200 with a body that is not JSON at all.
    "not-json": lambda up: httpx.Response(200, text="OK"),
}


@pytest.mark.parametrize("bad", [1, 2], ids=["once", "past-client-retries"])
@pytest.mark.parametrize("kind", sorted(NONCONFORMANT))
def test_cr_core_004_protocol_invalid_success_remains_ambiguous(
    tenant: MakeTenant, kind: str, bad: int
) -> None:
    """commit (applied, answered with a non-conformant 2xx) → commit with the same key.

    Only a schema-valid response with the expected status ends the settlement: after each
    invalid 2xx the journal record is still there with its original key, and the retry uses it.
    """
    t = tenant()
    wire = Wire().fail("commit", *[mangle(NONCONFORMANT[kind]) for _ in range(bad)])
    on_disk: list[dict[str, dict[str, Any]]] = []
    wire.observers.append(lambda s: on_disk.append(t.journal_files()) if s.op == "commit" else None)
    client = t.client(wire, retry_max_attempts=1)
    with guard(1_000, client=client, **KIND) as g:
        g.add_usage(250)
    assert g.settlement is not None
    assert settler_for(client).flush(timeout=10)

    key = f"{g.spec.idempotency_key}:commit"
    commits = wire.of("commit")
    assert wire.choreography() == ["commit"] * (bad + 1)
    assert [c.status for c in commits][-1] == 200
    # ambiguous_success_retains_original_idempotency_key: one key throughout, and the record
    # was in the journal, with that key, when every attempt (incl. each retry) left.
    assert {c.key for c in commits} == {key}
    name = record_filename(g.reservation_id or "")
    assert [snap[name]["idempotency_key"] for snap in on_disk] == [key] * (bad + 1)
    if bad == 2:
        # The settler's retry found the record kept after an ambiguous "success".
        assert on_disk[-1][name]["attempts"] == 1
        assert on_disk[-1][name]["last_error"]
    # only_schema_valid_expected_status_is_terminal_success
    assert g.settlement.settled is (bad == 1)
    if bad == 1:
        assert isinstance(g.settlement.response, rc.CommitResponse)
        assert g.settlement.response.charged.amount == 250
    assert t.journal_files() == {}
    assert t.ledger()["spent"] == 250


# -- CR-DURABLE-001 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "expire"),
    [(False, False), (True, False), (True, True)],
    ids=["before-send", "response-lost", "response-lost-then-expired"],
)
def test_cr_durable_001_journal_precedes_commit_and_survives_kill(
    tenant: MakeTenant, tmp_path: Path, forwarded: bool, expire: bool
) -> None:
    """A child process runs a guarded action and is killed (``os._exit``) while its first
    commit is in flight - before it left, or after the server applied it. A fresh settler in
    another process settles the journaled record with the same key; the spend lands once.

    ``response-lost-then-expired``: the reservation's lease runs out before the restart. The
    same-key commit is answered from the server's idempotency record (200), so the settler must
    not - and does not - fall back to an event, which would charge the spend twice.
    """
    t = tenant()
    # Long enough that a slow (loaded) child still commits before the lease ends.
    lease = {"ttl_ms": 2_000, "grace_period_ms": 0} if expire else {}
    evidence = run_child(
        {
            "role": "run",
            "config": child_config(t.config),
            "guard": {
                "estimate": 1_000,
                "actual": 640,
                "idempotency_key": secrets.token_hex(8),
                **lease,
            },
            "die_on": {"op": "commit", "forward": forwarded},
            "evidence": str(tmp_path / "evidence.json"),
        },
        expect_exit=EXIT_KILLED,
    )
    if expire:
        wait_past_expiry(evidence["expires_at_ms"])
    rid = evidence["reservation_id"]
    name = record_filename(rid)
    child_ops = [r["op"] for r in evidence["requests"]]
    assert child_ops == ["reserve", "commit"]
    commit_key = evidence["requests"][1]["key"]
    # journal_write_precedes_first_settlement_request: on disk when the first commit left.
    at_death = evidence["journal_at_death"]
    assert list(at_death) == [name]
    assert at_death[name]["reservation_id"] == rid
    assert at_death[name]["idempotency_key"] == commit_key
    assert (at_death[name]["mode"], at_death[name]["amount"]) == ("commit", 640)
    # unresolved_record_survives_restart
    assert t.journal_files() == {name: at_death[name]}
    assert t.ledger()["spent"] == (640 if forwarded else 0)

    wire = Wire()
    client = t.client(wire)  # a fresh process: only the journal directory carries over
    assert settler_for(client).flush(timeout=10)
    (commit,) = wire.of("commit")
    assert wire.choreography() == ["commit"]
    assert commit.key == commit_key
    assert commit.body["actual"] == {"unit": "USD_MICROCENTS", "amount": 640}
    assert commit.status == 200
    # successful_replay_removes_record
    assert t.journal_files() == {}
    # settlement_occurs_at_most_once
    assert t.ledger() == {"remaining": t.allocated - 640, "reserved": 0, "spent": 640}
    assert t.status(rid) is rc.ReservationStatus.COMMITTED


def test_cr_durable_001_async_restart_replays_on_first_settlement(tenant: MakeTenant) -> None:
    """The async lifecycle after a restart: the new process's first settlement also replays
    the record the dead one journaled (same key), and each spend lands once."""
    t = tenant()
    produced = die_at_first("commit", t, actual=270)
    assert list(t.journal_files()) == [record_filename(produced.reservation_id)]
    wire = Wire()

    async def main() -> None:
        async with t.aclient(wire) as client:  # a fresh process, async this time
            async with aguard(1_000, client=client, **KIND) as g:
                g.add_usage(30)
            assert g.settlement is not None
            assert g.settlement.settled
            assert await async_settler_for(client).flush(timeout=10)

    asyncio.run(main())
    keys = sorted(c.key or "" for c in wire.of("commit"))
    assert len(keys) == 2
    assert produced.key in keys
    assert all(c.status == 200 for c in wire.of("commit"))
    assert t.journal_files() == {}
    assert t.ledger() == {"remaining": t.allocated - 300, "reserved": 0, "spent": 300}


# -- CR-DURABLE-002 ------------------------------------------------------------------------------


def test_cr_durable_002_replayed_expired_commit_switches_durably_to_event(
    tenant: MakeTenant, tmp_path: Path
) -> None:
    """Journaled commit; restart → commit gets 410 → mode switched → killed before the event
    is answered; restart → the event (same key) settles it, and no commit is re-sent."""
    t = tenant()
    produced = die_at_first(
        "commit", t, actual=310, ttl_ms=1_000, grace_period_ms=0, heartbeat=False
    )
    name = record_filename(produced.reservation_id)
    assert t.journal_files()[name]["mode"] == "commit"
    wait_past_expiry(produced.expires_at_ms)

    # Restart 1 (a child process): replay → 410 → event mode → dies sending the event.
    evidence = run_child(
        {
            "role": "replay",
            "config": child_config(t.config),
            "die_on": {"op": "event", "forward": False},
            "evidence": str(tmp_path / "restart1.json"),
        },
        expect_exit=EXIT_KILLED,
    )
    first = evidence["requests"]
    assert [(r["op"], r.get("status")) for r in first] == [("commit", 410), ("event", None)]
    assert first[0]["key"] == first[1]["key"] == produced.key
    # event_mode_is_persisted_before_event_attempt
    at_death = evidence["journal_at_death"][name]
    assert (at_death["mode"], at_death["idempotency_key"]) == ("event", produced.key)
    assert t.journal_files()[name]["mode"] == "event"
    assert t.ledger()["spent"] == 0

    # Restart 2 (fresh settler): straight to the event, same key.
    wire = Wire()
    client = t.client(wire)
    assert settler_for(client).flush(timeout=10)
    (event,) = wire.of("event")
    assert wire.choreography() == ["event"]
    assert (event.key, event.status) == (produced.key, 201)
    assert_event_carries_original(event, produced.wire.of("reserve")[0], 310, produced.key)
    # successful_event_removes_record
    assert t.journal_files() == {}
    # settlement_occurs_at_most_once
    assert t.ledger()["spent"] == 310
    assert t.settles_as_expired(produced.reservation_id)


# -- CR-DURABLE-003 ------------------------------------------------------------------------------


def test_cr_durable_003_rate_limit_floor_survives_restart(
    tenant: MakeTenant, tmp_path: Path
) -> None:
    """commit → 429 Retry-After: 3 → the absolute not-before is journaled → killed; a restart
    before that time does not retry early, then commits with the same key once it is due."""
    t = tenant()
    retry_after = 3
    evidence = run_child(
        {
            "role": "run",
            "config": child_config(t.config),
            "guard": {"estimate": 1_000, "actual": 555, "idempotency_key": secrets.token_hex(8)},
            "reply_429": retry_after,
            "die_after_settle": True,
            "evidence": str(tmp_path / "evidence.json"),
        },
        expect_exit=EXIT_KILLED,
    )
    rid = evidence["reservation_id"]
    assert evidence["settlement"] == {"settled": False, "pending": True}
    assert [(r["op"], r.get("status")) for r in evidence["requests"]] == [
        ("reserve", 200),
        ("commit", 429),
    ]
    first_commit = evidence["requests"][1]
    record = evidence["journal_at_death"][record_filename(rid)]
    not_before = record["next_attempt_at"]
    assert not_before >= first_commit["at"] + retry_after

    # Restart before the server's Retry-After has elapsed.
    assert time.time() < not_before
    wire = Wire()
    client = t.client(wire)
    settler = settler_for(client)
    assert settler.flush(timeout=0) is False  # not due: nothing may be sent yet
    assert wire.of("commit") == []
    assert settler.flush(timeout=10)
    (commit,) = wire.of("commit")
    # no_retry_before_persisted_not_before
    assert commit.at >= not_before
    assert (commit.key, commit.status) == (first_commit["key"], 200)
    # successful_replay_removes_record
    assert t.journal_files() == {}
    assert t.ledger()["spent"] == 555


# -- CR-DURABLE-004 ------------------------------------------------------------------------------


def test_cr_durable_004_tenant_journal_survives_api_key_rotation(
    tenant: MakeTenant, server: Any
) -> None:
    """A record journaled under key K1; K1 is rotated out (K2 minted, K1 revoked); a restart
    configured with K2 for the same tenant finds the record and commits with its key. No key
    material is ever written to the journal."""
    t = tenant()
    with server.admin_client() as admin:
        old = admin.post("/v1/admin/api-keys", json={"tenant_id": t.name, "name": "old"}).json()
        t.config = t.cfg(api_key=old["key_secret"])
        produced = die_at_first("commit", t, actual=808)
        assert produced.wire.of("commit")[0].api_key == old["key_secret"]
        new = admin.post("/v1/admin/api-keys", json={"tenant_id": t.name, "name": "new"}).json()
        assert admin.delete(f"/v1/admin/api-keys/{old['key_id']}").status_code == 200
    with pytest.raises(rc.AuthenticationError), rc.CyclesClient(t.config) as revoked:
        revoked.get_balances()

    rotated = t.cfg(api_key=new["key_secret"])
    # new_tenant_credential_finds_record: same partition, record visible under the new key.
    assert journal_for(rotated).path == journal_for(t.config).path
    assert [r.reservation_id for r in journal_for(rotated).pending()] == [produced.reservation_id]
    wire = Wire()
    client = t.client(wire, api_key=new["key_secret"])
    assert settler_for(client).flush(timeout=10)
    (commit,) = wire.of("commit")
    assert wire.choreography() == ["commit"]
    assert (commit.key, commit.api_key, commit.status) == (produced.key, new["key_secret"], 200)
    assert t.journal_files(rotated) == {}
    t.config = rotated
    assert t.ledger()["spent"] == 808
    # old_api_key_is_not_stored: no secret (nor a fingerprint of one) in any name or byte.
    root = Path(t.config.journal_dir or "")
    for secret in (old["key_secret"], new["key_secret"]):
        fingerprint = _principal(dataclasses.replace(t.config, tenant=None, api_key=secret))
        for path in root.rglob("*"):
            assert secret not in str(path) and fingerprint not in str(path)
            if path.is_file():
                content = path.read_bytes()
                assert secret.encode() not in content
                assert fingerprint.encode() not in content


# -- CR-DURABLE-005 ------------------------------------------------------------------------------


def test_cr_durable_005_corrupt_or_unsupported_record_is_quarantined(
    tenant: MakeTenant, caplog: pytest.LogCaptureFixture
) -> None:
    """Beside one valid journaled commit: a truncated record, an unsupported record version and
    a non-JSON legacy file. On restart the bad ones are quarantined and reported, nothing is
    sent for them, and the valid record still settles."""
    t = tenant()
    produced = die_at_first("commit", t, actual=432)
    part = journal_for(t.config).path
    valid = part / record_filename(produced.reservation_id)
    good = json.loads(valid.read_bytes())
    truncated = part / record_filename("res_truncated")
    truncated.write_bytes(valid.read_bytes()[:40])
    unsupported = part / record_filename("res_from_the_future")
    unsupported.write_text(
        json.dumps({**good, "version": 3, "reservation_id": "res_from_the_future"})
    )
    legacy = part / "res_garbage.json"
    legacy.write_bytes(b"\x00\xffnot json")

    wire = Wire()
    with caplog.at_level(logging.ERROR, logger="runcycles_core.journal"):
        client = t.client(wire)
        settler = settler_for(client)
        assert settler.flush(timeout=10)
    # Nothing was sent for the bad records: the only request is the valid record's commit.
    assert wire.choreography() == ["commit"]
    (commit,) = wire.of("commit")
    assert (commit.key, commit.status) == (produced.key, 200)
    # other_valid_records_still_replay
    assert t.ledger()["spent"] == 432
    assert t.journal_files() == {}
    # corrupt_record_is_quarantined / unsupported_record_version_is_quarantined
    for bad in (truncated, unsupported, legacy):
        assert not bad.exists()
    reasons = {
        json.loads(p.read_text())["original"]: json.loads(p.read_text())["reason"]
        for p in (part / "quarantine").glob("*.reason.json")
    }
    assert set(reasons) == {truncated.name, unsupported.name, legacy.name}
    assert "not valid JSON" in reasons[truncated.name]
    assert "unsupported record version 3" in reasons[unsupported.name]
    assert len(settler.journal.quarantined()) == 3
    # corruption_is_reported
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    for bad in (truncated, unsupported, legacy):
        assert any(bad.name in m and "quarantined" in m for m in errors)


# -- CR-DURABLE-006 ------------------------------------------------------------------------------


@pytest.mark.parametrize("journals", ["shared", "copied"])
def test_cr_durable_006_concurrent_replay_remains_exactly_once(
    tenant: MakeTenant, tmp_path: Path, journals: str
) -> None:
    """Two independently started worker processes replay the same journaled commit at once.

    ``shared``: both use one journal directory; whoever takes the record's lock commits (slowly),
    the other finds it busy and then gone. ``copied``: each worker has its own copy of the record
    (a restored backup, a second host) and both send the commit at the same instant with the
    stored key; the server applies it once. Either way the spend lands once and the record is
    removed."""
    t = tenant()
    produced = die_at_first("commit", t, actual=901)
    name = record_filename(produced.reservation_id)
    source = Path(t.config.journal_dir or "")
    dirs = [source, source]
    if journals == "copied":
        dirs = [tmp_path / "host-a", tmp_path / "host-b"]
        for d in dirs:
            shutil.copytree(source, d)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for i, d in enumerate(dirs):
        plan = {
            "role": "replay",
            "config": child_config(t.cfg(journal_dir=str(d))),
            "barrier": {
                "dir": str(barrier),
                "name": f"w{i}",
                "count": 2,
                "at": "commit" if journals == "copied" else "start",
            },
            "delay_commit_s": 0.3 if journals == "shared" else 0,
            "evidence": str(tmp_path / f"worker{i}.json"),
        }
        procs.append(
            spawn(
                [sys.executable, str(CHILD), json.dumps(plan)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    try:
        outputs = [p.communicate(timeout=start_timeout()) for p in procs]
    finally:
        for p in procs:
            stop_group(p)
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-2000:] for o in outputs]
    workers = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    commits = [r for w in workers for r in w["requests"] if r["op"] == "commit"]
    # concurrent_commit_same_key
    assert {c["key"] for c in commits} == {produced.key}
    assert [c["status"] for c in commits] == [200] * len(commits)
    assert len(commits) == (1 if journals == "shared" else 2)
    assert all(r["op"] == "commit" for w in workers for r in w["requests"])
    if journals == "copied":
        # Both were released by the barrier and sent together.
        assert abs(commits[0]["sent_at"] - commits[1]["sent_at"]) < 1.0
    # terminal_record_is_removed (from every journal)
    assert [w["flushed"] for w in workers] == [True, True]
    for w, d in zip(workers, dirs, strict=True):
        assert name not in w["journal_at_exit"]
        assert t.journal_files(t.cfg(journal_dir=str(d))) == {}
    # settlement_occurs_at_most_once
    assert t.ledger() == {"remaining": t.allocated - 901, "reserved": 0, "spent": 901}
    assert t.status(produced.reservation_id) is rc.ReservationStatus.COMMITTED


# -- CR-DURABLE-007 ------------------------------------------------------------------------------


def test_cr_durable_007_journal_filenames_preserve_distinct_identifiers(
    tenant: MakeTenant, tmp_path: Path
) -> None:
    """Two unguarded (fail-open) actions whose synthetic settlement ids differ only in ``/``
    versus ``:`` - identical under the legacy sanitized file naming - die at their first event.
    Their records get distinct standard names. A legacy-named copy of one is then met: looking
    up the other id leaves it alone; looking up its own id migrates it. No request is sent
    while doing so; afterwards both settle, each with its own key."""
    t = tenant()
    base = secrets.token_hex(4)
    produced = []
    for n, (sep, amount) in enumerate((("/", 11), (":", 22))):
        # Each in its own process and journal directory (a fresh settler replays whatever it
        # finds, so the second process must not find the first one's record); both records
        # are then gathered into one journal.
        own = tmp_path / f"process-{n}"
        p = die_at_first(
            "event",
            t,
            actual=amount,
            estimate=100,
            wire=Wire().fail("reserve", refuse()),
            client_options={"retry_max_attempts": 0, "journal_dir": str(own)},
            outage_policy="fail_open",
            idempotency_key=f"{base}{sep}1",
        )
        assert p.wire.choreography() == ["event"]  # unguarded: settled as a direct event
        name = record_filename(p.reservation_id)
        shutil.move(
            journal_for(t.cfg(journal_dir=str(own))).path / name, journal_for(t.config).path / name
        )
        produced.append((p.reservation_id, p.key, amount))
    (id_a, key_a, _), (id_b, key_b, _) = produced
    assert id_a != id_b
    assert _legacy_filename(id_a) == _legacy_filename(id_b)
    # standard_filename_is_sha256_of_exact_utf8_identifier
    files = t.journal_files()
    for rid, key, _ in produced:
        digest = hashlib.sha256(rid.encode("utf-8")).hexdigest()
        assert files[f"v2-{digest}.json"]["reservation_id"] == rid
        assert files[f"v2-{digest}.json"]["idempotency_key"] == key
    # The exact UTF-8 bytes, not a normalized form: NFC and NFD spellings stay distinct.
    assert record_filename("res-\u00f1") != record_filename("res-n\u0303")
    assert (
        record_filename("res-\u00f1")
        == "v2-" + hashlib.sha256(b"res-\xc3\xb1").hexdigest() + ".json"
    )
    # distinct_identifiers_never_share_a_journal_file
    assert len(files) == 2

    # legacy_record_encountered: A's record as an older journal named it (the colliding name).
    journal = journal_for(t.config)
    legacy = journal.path / _legacy_filename(id_a)
    (journal.path / record_filename(id_a)).rename(legacy)
    record_b = journal.get(id_b)  # B's lookup meets A's legacy file under B's legacy name...
    assert record_b is not None
    assert record_b.reservation_id == id_b
    assert legacy.exists()  # ...and must not delete or claim it
    assert json.loads(legacy.read_bytes())["reservation_id"] == id_a
    # matching_legacy_record_migrates_without_deleting_collision
    record_a = journal.get(id_a)
    assert record_a is not None
    assert (record_a.reservation_id, record_a.idempotency_key) == (id_a, key_a)
    assert not legacy.exists()
    assert set(t.journal_files()) == {record_filename(id_a), record_filename(id_b)}

    # Both still settle, each once, each with its own key.
    wire = Wire()
    assert settler_for(t.client(wire)).flush(timeout=10)
    assert sorted((e.key, e.status) for e in wire.of("event")) == sorted(
        [(key_a, 201), (key_b, 201)]
    )
    assert wire.choreography() == ["event", "event"]
    assert t.ledger()["spent"] == 33
    assert t.journal_files() == {}


# -- CR-BOUNDARY-001 -----------------------------------------------------------------------------


class ProviderDown(RuntimeError):
    pass


def _fails_sync(t: Tenant, wire: Wire) -> None:
    @cycles(estimate=1_000, actual=lambda r: 10, client=t.client(wire), **KIND)
    def call_model() -> int:
        raise ProviderDown("upstream 503")

    call_model()


def _fails_async(t: Tenant, wire: Wire) -> None:
    async def main() -> None:
        async with t.aclient(wire) as client:

            @cycles(estimate=1_000, actual=lambda r: 10, client=client, **KIND)
            async def call_model() -> int:
                raise ProviderDown("upstream 503")

            await call_model()

    asyncio.run(main())


def _fails_stream(t: Tenant, wire: Wire) -> None:
    @cycles(estimate=1_000, actual=lambda chunks: 10 * len(chunks), client=t.client(wire), **KIND)
    def stream() -> Iterator[str]:
        raise ProviderDown("stream refused")
        yield "never"

    list(stream())


def _fails_handle(t: Tenant, wire: Wire) -> None:
    h = reserve(1_000, client=t.client(wire), **KIND)
    try:
        raise ProviderDown("callback never fired")
    finally:
        h.release("no usage reported")


BOUNDARY: dict[str, Callable[[Tenant, Wire], None]] = {
    "decorated": _fails_sync,
    "decorated-async": _fails_async,
    "stream": _fails_stream,
    "handle": _fails_handle,
}


@pytest.mark.parametrize("shape", sorted(BOUNDARY))
def test_cr_boundary_001_missing_actual_is_surfaced_without_settlement(
    tenant: MakeTenant, shape: str
) -> None:
    """The guarded action fails without producing an actual: no commit or event is sent, no
    journal record is written, the failure reaches the caller, and the hold is released."""
    t = tenant()
    wire = Wire()
    # missing_actual_or_guarded_action_failure_is_surfaced
    with pytest.raises(ProviderDown):
        BOUNDARY[shape](t, wire)
    # no_commit_or_event_without_known_actual
    assert wire.of(*SETTLEMENT_OPS) == []
    assert wire.choreography() == ["release"]
    assert t.journal_files() == {}
    assert t.ledger() == {"remaining": t.allocated, "reserved": 0, "spent": 0}


# -- profile MUSTs around the scenarios -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "UNAUTHORIZED"), (403, "FORBIDDEN"), (418, "SOMETHING_NEW")],
    ids=["auth-failed", "forbidden", "unclassifiable-4xx"],
)
def test_unresolved_commit_is_kept_and_never_released(
    tenant: MakeTenant, status: int, code: str
) -> None:
    """After the action ran, a commit answered with an authentication failure or a 4xx this
    client does not understand is neither released nor dropped: the record stays in the journal
    through the settler's retries, and a later process settles it with the same key."""
    t = tenant()
    body = {"error": code, "message": "no", "request_id": "r"}
    wire = Wire().fail("commit", *[answer(status, body) for _ in range(20)])
    client = t.client(wire, retry_max_attempts=1)
    with guard(1_000, client=client, **KIND) as g:
        g.add_usage(75)
    assert g.settlement is not None
    assert g.settlement.pending
    assert settler_for(client).flush(timeout=0.5) is False
    assert wire.of("release") == []
    assert {c.key for c in wire.of("commit")} == {f"{g.spec.idempotency_key}:commit"}
    assert len(wire.of("commit")) >= 2  # the settler retried, and kept the record
    name = record_filename(g.reservation_id or "")
    assert t.journal_files()[name]["attempts"] >= 1
    assert t.ledger() == {"remaining": t.allocated - 1_000, "reserved": 1_000, "spent": 0}
    client.close()

    later = Wire()
    assert settler_for(t.client(later)).flush(timeout=10)
    assert [(c.key, c.status) for c in later.of("commit")] == [
        (f"{g.spec.idempotency_key}:commit", 200)
    ]
    assert t.ledger() == {"remaining": t.allocated - 75, "reserved": 0, "spent": 75}
    assert t.journal_files() == {}


# -- flush (profile: explicit drain with a bounded wait) ----------------------------------------


def test_flush_is_bounded_and_leaves_unresolved_records_intact(tenant: MakeTenant) -> None:
    """flush() waits at most its timeout and leaves an unresolved record as it was; after the
    client is closed it returns at once instead of waiting on a worker that has stopped; a
    later process settles the record once it is due."""
    t = tenant()
    body = {"error": "RATE_LIMITED", "message": "slow down", "request_id": "r"}
    wire = Wire().fail("commit", answer(429, body, {"Retry-After": "2"}))
    client = t.client(wire)
    with guard(1_000, client=client, **KIND) as g:
        g.add_usage(60)
    assert g.settlement is not None
    assert g.settlement.pending
    name = record_filename(g.reservation_id or "")
    kept = t.journal_files()[name]
    settler = settler_for(client)

    started = time.monotonic()
    assert settler.flush(timeout=0.5) is False
    assert 0.4 <= time.monotonic() - started < 1.5
    assert t.journal_files() == {name: kept}

    client.close()
    started = time.monotonic()
    assert settler.flush(timeout=5) is False
    assert time.monotonic() - started < 1.5
    assert t.journal_files()[name]["idempotency_key"] == kept["idempotency_key"]
    assert t.ledger()["spent"] == 0

    later = Wire()
    assert settler_for(t.client(later)).flush(timeout=10)
    (commit,) = later.of("commit")
    assert commit.key == kept["idempotency_key"]
    assert commit.at >= kept["next_attempt_at"]
    assert t.ledger()["spent"] == 60
    assert t.journal_files() == {}


# -- property: what the client committed is what the server spent ---------------------------

BEHAVIOURS = (
    "commit_actual",  # usage reported, normal exit
    "raise_before_usage",  # fails before spending: released
    "raise_after_usage",  # fails after spending: the consumed usage is committed
    "ran_without_actual",  # ran, reported nothing: the estimate is committed, tagged
    "handle_commit",  # reserve() handle, explicit commit(actual)
    "handle_release",  # reserve() handle, released unused
    "decorated",  # @cycles with actual= from the return value
)

action = st.tuples(
    st.integers(1, 5_000),  # estimate
    st.integers(0, 8_000),  # actual (may exceed the estimate)
    st.sampled_from(BEHAVIOURS),
    st.sampled_from(["none", "lose_response", "rate_limited"]),  # fault on the first commit
)


class Boom(RuntimeError):
    pass


def _run_action(client: rc.CyclesClient, estimate: int, actual: int, behaviour: str) -> int:
    """Run one guarded action; return what it should have charged."""
    opts: dict[str, Any] = {**KIND, "overage_policy": "ALLOW_IF_AVAILABLE", "heartbeat": False}
    if behaviour == "commit_actual":
        with guard(estimate, client=client, **opts) as g:
            g.add_usage(actual)
        return actual
    if behaviour == "raise_before_usage":
        with pytest.raises(Boom), guard(estimate, client=client, **opts):
            raise Boom
        return 0
    if behaviour == "raise_after_usage":
        with pytest.raises(Boom), guard(estimate, client=client, **opts) as g:
            g.add_usage(actual)
            raise Boom
        return actual
    if behaviour == "ran_without_actual":
        with guard(estimate, client=client, **opts) as g:
            g.mark_ran()
        return estimate
    if behaviour == "handle_commit":
        reserve(estimate, client=client, **opts).commit(actual)
        return actual
    if behaviour == "handle_release":
        reserve(estimate, client=client, **opts).release()
        return 0

    @cycles(estimate=estimate, actual=lambda r: r, client=client, **opts)
    def work() -> int:
        return actual

    assert work() == actual
    return actual


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=st.lists(action, min_size=1, max_size=6))
def test_committed_sum_equals_server_spent(
    tenant: MakeTenant, actions: list[tuple[int, int, str, str]]
) -> None:
    """Over random sequences of guarded actions (with lost commit responses and 429s thrown in),
    the amounts the client settled - each commit key counted once - equal the server's spent."""
    t = tenant(budget=1_000_000)
    wire = Wire()
    client = t.client(wire, retry_max_attempts=2)
    expected = 0
    for estimate, actual, behaviour, fault in actions:
        if fault == "lose_response":
            wire.fail("commit", lose_response())
        elif fault == "rate_limited":
            body = {"error": "RATE_LIMITED", "message": "slow down", "request_id": "r"}
            wire.fail("commit", answer(429, body, {"Retry-After": "0"}))
        expected += _run_action(client, estimate, actual, behaviour)
        wire.faults.pop("commit", None)  # a fault not used (no commit) does not carry over
    settled = {c.key: c.body["actual"]["amount"] for c in wire.of("commit") if c.status == 200}
    assert sum(settled.values()) == expected
    assert t.ledger() == {
        "remaining": t.allocated - expected,
        "reserved": 0,
        "spent": expected,
    }
    assert t.journal_files() == {}


# -- the conformance runner's adapter ------------------------------------------------------------

ADAPTER = Path(__file__).with_name("recovery_adapter.py")
INPUTS = ("id", "level", "name", "precondition", "faults")


# The catalog this suite is bound to: profile cycles-sdk-recovery v0.3, every scenario's inputs
# (what the shared runner sends the adapter) and what it asserts (the runner's review oracle).
# The conformance session checks it is still the upstream catalog, field for field.
CATALOG_PROFILE = ("cycles-sdk-recovery", "0.3")
CATALOG: tuple[dict[str, Any], ...] = (
    {
        "id": "CR-CORE-001",
        "level": "core",
        "name": "lost commit response reuses the same key",
        "precondition": "actual_known",
        "faults": [
            "commit_response_lost",
        ],
        "expected_requests": [
            "commit",
            "commit_same_key",
        ],
        "assertions": [
            "settlement_occurs_at_most_once",
            "retry_uses_original_idempotency_key",
        ],
    },
    {
        "id": "CR-CORE-002",
        "level": "core",
        "name": "expired commit falls back to an event",
        "precondition": "actual_known",
        "faults": [
            "commit_reservation_expired",
        ],
        "expected_requests": [
            "commit",
            "event_same_key",
        ],
        "assertions": [
            "event_carries_original_subject_action_actual",
            "settlement_occurs_at_most_once",
        ],
    },
    {
        "id": "CR-CORE-003",
        "level": "core",
        "name": "heartbeat transport failure is observable and non-fatal",
        "precondition": "action_running",
        "faults": [
            "extend_transport_error",
        ],
        "expected_requests": [
            "extend",
            "extend_same_key",
            "commit",
        ],
        "assertions": [
            "heartbeat_failure_reports_reservation_and_disposition",
            "guarded_action_continues_under_warn_policy",
            "final_settlement_is_attempted",
        ],
    },
    {
        "id": "CR-CORE-004",
        "level": "core",
        "name": "protocol-invalid settlement success remains ambiguous",
        "precondition": "actual_known",
        "faults": [
            "commit_nonconformant_2xx_or_body",
        ],
        "expected_requests": [
            "commit",
            "commit_same_key",
        ],
        "assertions": [
            "only_schema_valid_expected_status_is_terminal_success",
            "ambiguous_success_retains_original_idempotency_key",
        ],
    },
    {
        "id": "CR-DURABLE-001",
        "level": "durable",
        "name": "first commit is journaled before it leaves the process",
        "precondition": "actual_known",
        "faults": [
            "process_terminated_while_first_commit_is_in_flight",
            "process_restarted",
        ],
        "expected_requests": [
            "commit",
            "commit_same_key_after_restart",
        ],
        "assertions": [
            "journal_write_precedes_first_settlement_request",
            "unresolved_record_survives_restart",
            "successful_replay_removes_record",
            "settlement_occurs_at_most_once",
        ],
    },
    {
        "id": "CR-DURABLE-002",
        "level": "durable",
        "name": "replayed expired commit switches durably to event mode",
        "precondition": "journal_contains_commit",
        "faults": [
            "process_restarted",
            "commit_reservation_expired",
            "process_terminated_after_mode_switch",
            "process_restarted",
        ],
        "expected_requests": [
            "commit_same_key_after_restart",
            "event_same_key_after_restart",
        ],
        "assertions": [
            "event_mode_is_persisted_before_event_attempt",
            "successful_event_removes_record",
            "settlement_occurs_at_most_once",
        ],
    },
    {
        "id": "CR-DURABLE-003",
        "level": "durable",
        "name": "rate-limit floor survives restart",
        "precondition": "actual_known",
        "faults": [
            "commit_429_with_retry_after",
            "process_terminated_after_journal_write",
            "process_restarted_before_retry_after",
        ],
        "expected_requests": [
            "commit",
            "commit_same_key_after_retry_after",
        ],
        "assertions": [
            "no_retry_before_persisted_not_before",
            "successful_replay_removes_record",
        ],
    },
    {
        "id": "CR-DURABLE-004",
        "level": "durable",
        "name": "tenant journal survives API-key rotation",
        "precondition": "journal_contains_commit_with_tenant_identity",
        "faults": [
            "api_key_rotated",
            "process_restarted",
        ],
        "expected_requests": [
            "commit_same_key_after_restart",
        ],
        "assertions": [
            "new_tenant_credential_finds_record",
            "old_api_key_is_not_stored",
        ],
    },
    {
        "id": "CR-DURABLE-005",
        "level": "durable",
        "name": "corrupt or unsupported journal record is quarantined",
        "precondition": "journal_contains_corrupt_or_unsupported_record",
        "faults": [
            "process_restarted",
        ],
        "expected_requests": [],
        "assertions": [
            "corrupt_record_is_quarantined",
            "unsupported_record_version_is_quarantined",
            "other_valid_records_still_replay",
            "corruption_is_reported",
        ],
    },
    {
        "id": "CR-DURABLE-006",
        "level": "durable",
        "name": "concurrent replay remains exactly once",
        "precondition": "journal_contains_commit",
        "faults": [
            "two_independent_workers_replay_same_record",
        ],
        "expected_requests": [
            "concurrent_commit_same_key",
        ],
        "assertions": [
            "settlement_occurs_at_most_once",
            "terminal_record_is_removed",
        ],
    },
    {
        "id": "CR-DURABLE-007",
        "level": "durable",
        "name": "journal filenames preserve distinct arbitrary reservation identifiers",
        "precondition": "journal_contains_records_with_colliding_legacy_identifiers",
        "faults": [
            "legacy_record_encountered",
        ],
        "expected_requests": [],
        "assertions": [
            "standard_filename_is_sha256_of_exact_utf8_identifier",
            "distinct_identifiers_never_share_a_journal_file",
            "matching_legacy_record_migrates_without_deleting_collision",
        ],
    },
    {
        "id": "CR-BOUNDARY-001",
        "level": "boundary",
        "name": "missing actual is surfaced without settlement",
        "precondition": "actual_unknown",
        "faults": [
            "guarded_action_does_not_return_actual",
        ],
        "expected_requests": [],
        "assertions": [
            "no_commit_or_event_without_known_actual",
            "missing_actual_or_guarded_action_failure_is_surfaced",
        ],
    },
)


def _catalog() -> list[dict[str, Any]]:
    return [dict(scenario) for scenario in CATALOG]


def _slug(scenario_id: str) -> str:
    return "test_" + scenario_id.lower().replace("-", "_") + "_"


def _adapter(
    scenario_id: str, stdin: dict[str, Any], report: str | None = None
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != REPORT_ENV}
    if report is not None:
        env[REPORT_ENV] = report
    proc = run(
        [sys.executable, str(ADAPTER), scenario_id],
        input=json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=start_timeout(300),
        env=env,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _check_result(scenario_id: str, code: int, out: str, err: str) -> list[str]:
    """The runner's checks on one adapter result; returns the native tests it names."""
    assert code == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    result = json.loads(lines[0])
    assert set(result) == {"scenario_id", "passed", "native_tests"}, (result, err[-3000:])
    assert result["scenario_id"] == scenario_id
    assert result["passed"] is True
    native: list[str] = result["native_tests"]
    assert native
    assert len(set(native)) == len(native)
    prefix = f"packages/runcycles-core/tests/test_recovery_scenarios.py::{_slug(scenario_id)}"
    assert all(n.startswith(prefix) for n in native), native
    # Every bound function really ran (each parametrization is listed on its own).
    assert {n.split("::", 1)[1].split("[")[0] for n in native} == set(SCENARIO_TESTS[scenario_id])
    return native


def _inputs(scenario: dict[str, Any]) -> dict[str, Any]:
    return {k: scenario[k] for k in INPUTS}


def test_adapter_binds_every_catalog_scenario_to_tests_here() -> None:
    """All 12 durable-claim scenarios (core, durable, boundary) map to named tests here."""
    ids = [s["id"] for s in _catalog()]
    assert len(ids) == 12
    assert {s["level"] for s in _catalog()} == {"core", "durable", "boundary"}
    assert set(SCENARIO_TESTS) == set(ids)
    for scenario_id, functions in SCENARIO_TESTS.items():
        assert functions
        for fn in functions:
            assert fn.startswith(_slug(scenario_id))
            assert callable(globals()[fn])


# The scenario the adapter's default mode runs itself (its one bound test is quick); the
# others are attested in report mode by the conformance session (conformance/test_recovery.py),
# which drives this adapter with the protocol's own runner.
EXECUTED_BY_ADAPTER = "CR-DURABLE-005"


def test_recovery_adapter_runs_and_attests_a_scenario() -> None:
    """What the shared runner does for a scenario: a fresh adapter process with only the
    scenario's inputs on stdin, one JSON result on stdout naming the exact native tests that
    ran and passed (here in its default mode: it runs those tests in pytest itself).

    Every other scenario goes through the same adapter in report mode, from the protocol's own
    runner, in the conformance session: running all the bound tests a second time here as
    well cost this session 40 s.
    """
    catalog = {s["id"]: s for s in _catalog()}
    code, out, err = _adapter(EXECUTED_BY_ADAPTER, _inputs(catalog[EXECUTED_BY_ADAPTER]))
    native = _check_result(EXECUTED_BY_ADAPTER, code, out, err)
    assert native == [
        "packages/runcycles-core/tests/test_recovery_scenarios.py::"
        "test_cr_durable_005_corrupt_or_unsupported_record_is_quarantined"
    ]
    assert "1 passed" in err  # the adapter's own pytest run


def test_recovery_adapter_fails_what_it_cannot_attest(tmp_path: Path) -> None:
    """Unbound ids, stdin for another scenario or with oracle fields, and reports in which a
    bound test failed or is missing all yield ``passed: false`` with a diagnostic."""
    catalog = _catalog()

    def result(scenario_id: str, stdin: dict[str, Any], report: str | None = None) -> Any:
        code, out, _ = _adapter(scenario_id, stdin, report)
        assert code == 0
        parsed = json.loads(out)
        assert parsed["scenario_id"] == scenario_id
        assert parsed["passed"] is False
        return parsed

    unbound = {"id": "CR-CORE-999", "level": "core", "name": "x", "precondition": "p", "faults": []}
    assert "no native test" in result("CR-CORE-999", unbound)["diagnostic"]
    assert "not 'CR-CORE-001'" in result("CR-CORE-001", _inputs(catalog[1]))["diagnostic"]
    assert "not scenario inputs" in result("CR-CORE-001", dict(catalog[0]))["diagnostic"]

    fn = SCENARIO_TESTS["CR-CORE-002"][0]
    failed = tmp_path / "failed.xml"
    failed.write_text(
        '<testsuites><testsuite name="pytest">'
        f'<testcase classname="tests.test_recovery_scenarios" name="{fn}">'
        '<failure message="assert 410 == 201"/></testcase>'
        "</testsuite></testsuites>"
    )
    verdict = result("CR-CORE-002", _inputs(catalog[1]), str(failed))
    assert "assert 410 == 201" in verdict["diagnostic"]
    assert verdict["native_tests"] == [f"packages/runcycles-core/{MODULE}::{fn}"]
    missing = result("CR-CORE-003", _inputs(catalog[2]), str(failed))
    assert "did not run" in missing["diagnostic"]
