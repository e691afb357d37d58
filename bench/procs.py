"""The processes under test: server-lite and the hello-world baseline, each a uvicorn server
in its own process tree, plus CPU and RSS accounting per process role."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from runcycles_server_lite.testing import http_ok, spawn, stop_group, wait_ready

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    wait_ready(http_ok(url), f"{proc.args!r} at {url}", proc=proc, log=log)


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy (anything but idle and iowait) since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def background_load(seconds: float = 1.0) -> float:
    """Percent of one core used by other processes on this machine over ``seconds``."""
    before = machine_busy_s()
    time.sleep(seconds)
    return 100 * (machine_busy_s() - before) / seconds


@dataclass
class CpuSnapshot:
    """Cumulative CPU seconds at one instant: this process, the machine, each server process."""

    at: float
    load: float
    machine: float
    per_pid: dict[int, tuple[str, float]]

    def pct_since(self, before: CpuSnapshot) -> dict[str, float]:
        """Percent of one core per role between ``before`` and this snapshot. Per process, so
        a child that started meanwhile (an AOF rewrite, a worker) counts from zero and one
        that exited does not make a role negative."""
        wall = self.at - before.at
        used = {"server": 0.0, "redis": 0.0}
        for pid, (role, cpu) in self.per_pid.items():
            used[role] = used.get(role, 0.0) + cpu - before.per_pid.get(pid, (role, 0.0))[1]
        used["load"] = self.load - before.load
        pct = {role: 100 * v / wall for role, v in used.items()}
        mine = pct["server"] + pct["redis"] + pct["load"]
        # What the rest of the machine used meanwhile (other processes: noise in the figures).
        pct["other"] = max(0.0, 100 * (self.machine - before.machine) / wall - mine)
        return pct


@dataclass
class Served:
    """A uvicorn-served app in a child process tree (master, workers, maybe redis-server),
    leading its own process group."""

    name: str
    base_url: str
    proc: subprocess.Popen[bytes]
    workers: int
    data_dir: Path | None = None
    admin_api_key: str = ""
    log: Path = field(default=Path(os.devnull))

    @property
    def redis_url(self) -> str:
        assert self.data_dir is not None
        return f"unix://{self.data_dir / 'redis.sock'}"

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    @staticmethod
    def role(p: psutil.Process) -> str:
        try:
            return "redis" if "redis-server" in p.name() else "server"
        except psutil.NoSuchProcess:
            return "gone"

    def cpu(self) -> CpuSnapshot:
        """CPU seconds (user + system) per process of the server tree, plus this
        (load-generating) process and the whole machine."""
        per_pid: dict[int, tuple[str, float]] = {}
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                per_pid[p.pid] = (self.role(p), t.user + t.system)
        me = psutil.Process().cpu_times()
        return CpuSnapshot(time.monotonic(), me.user + me.system, machine_busy_s(), per_pid)

    def rss(self) -> dict[str, int]:
        """Resident set size in bytes of the server processes (summed) and redis-server."""
        out = {"server": 0, "redis": 0}
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                out[self.role(p)] = out.get(self.role(p), 0) + p.memory_info().rss
        return out

    def where(self) -> str:
        parts = []
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                cpus = ",".join(str(c) for c in p.cpu_affinity())
                parts.append(f"{self.role(p)} pid {p.pid} on cpus {cpus}")
        return "; ".join(parts)

    def stop(self) -> None:
        stop_group(self.proc, grace=20)


def _bin(name: str) -> str:
    # The console scripts live beside this interpreter in the bench venv.
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    # Always the embedded store, so runs never touch a developer's Redis.
    for var in ("REDIS_URL", "RUNCYCLES_KEY_PREFIX", "RUNCYCLES_DATA_DIR", "RUNCYCLES_PORT"):
        env.pop(var, None)
    return env


@contextlib.contextmanager
def server_lite(workers: int) -> Iterator[Served]:
    """The real ``runcycles-server-lite`` console script on a free port, with ``--workers`` and
    a temporary ``--data-dir`` (so a fresh embedded redis-server)."""
    # /tmp keeps the unix socket path short.
    data_dir = Path(tempfile.mkdtemp(prefix="rcbench-"))
    port = free_port()
    admin = "bench-admin-" + secrets.token_hex(8)
    env = _clean_env() | {"ADMIN_API_KEY": admin}
    log = data_dir / "server.log"
    with log.open("wb") as out:
        proc = spawn(
            [
                _bin("runcycles-server-lite"),
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--data-dir",
                str(data_dir),
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    s = Served("server-lite", base, proc, workers, data_dir, admin, log)
    try:
        _wait_ready(f"{base}/actuator/health", proc, log)
        yield s
    finally:
        s.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def hello_world(workers: int) -> Iterator[Served]:
    """``bench.hello_app`` under plain uvicorn with the same worker count and flags as
    server-lite's own ``uvicorn.run`` (no access log, no server header, default loop/http)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="rcbench-hello-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.hello_app:app",
                "--app-dir",
                str(REPO),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
                "--no-server-header",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
        )
    base = f"http://127.0.0.1:{port}"
    s = Served("hello-world", base, proc, workers, log=log)
    try:
        _wait_ready(f"{base}/healthz", proc, log)
        yield s
    finally:
        s.stop()
        log.unlink(missing_ok=True)
