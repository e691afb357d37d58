"""Run a README's quickstart exactly as written, against the real server-lite console script.

A README marks its quickstart with ``<!-- quickstart:shell -->`` and ``<!-- quickstart:python -->``
before the code blocks. :meth:`Quickstart.run` executes the shell block verbatim in bash (it
starts the server in the background with ``runcycles-server-lite &`` on the documented port
and runs admin commands at once; they wait for the server to answer), then the Python block,
with a fresh ``HOME`` (so a fresh data dir and admin key) and none of the caller's
``CYCLES_*`` / ``RUNCYCLES_*`` settings, as a new user would. The shell runs in its own process
group, which is stopped, background server included, when the ``with`` block ends.

The blocks name the server's default port, so on one machine these runs take turns (a lock
file); a port already taken by something else fails with a message saying so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runcycles_server_lite.config import DEFAULT_PORT
from runcycles_server_lite.testing import run, spawn, start_timeout, stop_group, wait_ready

__all__ = ["Quickstart", "quickstart", "readme_blocks"]

_MARKED = re.compile(r"<!-- quickstart:(\w+) -->\s*```\w+\n(.*?)```", flags=re.S)
_SERVER_LINE = "runcycles-server-lite &"
# Never passed through to a quickstart: they would point it at another server or store.
_ALWAYS_DROPPED = ("CYCLES_", "RUNCYCLES_", "REDIS_URL", "ADMIN_API_KEY")


def readme_blocks(readme: Path) -> dict[str, str]:
    """The marked quickstart blocks of ``readme``, by marker name."""
    return dict(_MARKED.findall(readme.read_text(encoding="utf-8")))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Quickstart:
    """A README's quickstart, ready to :meth:`run` once in a fresh environment."""

    blocks: dict[str, str]
    env: dict[str, str]
    workdir: Path
    port: int = DEFAULT_PORT
    _shell: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _api_key: str = field(default="", repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(
        self, extra_shell: str = "", timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The shell block as written, then ``extra_shell``, then the Python block; the server
        the shell block started keeps running until the ``with`` block ends."""
        assert self._shell is None, "a quickstart runs once"
        script = self.workdir / "quickstart.py"
        script.write_text(textwrap.dedent(self.blocks["python"]), encoding="utf-8")
        shell = self.workdir / "quickstart.sh"
        shell.write_text(
            f"{self.blocks['shell']}\n{extra_shell}\n{sys.executable} {script}\n", encoding="utf-8"
        )
        out, err = self.workdir / "stdout.txt", self.workdir / "stderr.txt"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self._shell = spawn(
                ["bash", "-euo", "pipefail", str(shell)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=self.env,
                cwd=self.workdir,
            )
        # Not communicate(): the background server holds the output files open after the
        # shell exits.
        code = self._shell.wait(timeout=start_timeout(180) if timeout is None else timeout)
        return subprocess.CompletedProcess(
            self._shell.args,
            code,
            out.read_text(encoding="utf-8", errors="replace"),
            err.read_text(encoding="utf-8", errors="replace"),
        )

    def run_and_check(self, timeout: float | None = None) -> str:
        """:meth:`run` the quickstart, fail with its output if it did not exit 0, and return
        its last line of output; :meth:`balance` then reads the ledger with the key it made."""
        key_file = self.workdir / "quickstart-api-key"
        done = self.run(extra_shell=f"printenv CYCLES_API_KEY > {key_file}", timeout=timeout)
        assert done.returncode == 0, done.stdout + done.stderr
        self._api_key = key_file.read_text(encoding="utf-8").strip()
        lines = done.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def balance(self, tenant: str = "acme") -> tuple[int, int]:
        """``(spent, reserved)`` of ``tenant``'s own budget, read with the quickstart's API key
        (after :meth:`run_and_check`)."""
        assert self._api_key, "run_and_check() first: the API key comes from the quickstart"
        reply = httpx.get(
            f"{self.base_url}/v1/balances",
            params={"tenant": tenant},
            headers={"X-Cycles-API-Key": self._api_key},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        (own,) = [b for b in reply.json()["balances"] if b["scope"] == f"tenant:{tenant}"]
        return int(own["spent"]["amount"]), int(own.get("reserved", {"amount": 0})["amount"])

    def cli(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``runcycles-server-lite ARGS`` in the quickstart's environment (so against its
        server, with its admin key)."""
        return run(
            ["runcycles-server-lite", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=start_timeout(60) if timeout is None else timeout,
        )

    def _stop(self) -> None:
        if self._shell is not None:
            stop_group(self._shell)


@contextlib.contextmanager
def _turn(port: int) -> Iterator[None]:
    """Hold the machine-wide lock for quickstarts on ``port`` for the ``with`` block."""
    path = Path(tempfile.gettempdir()) / f"runcycles-quickstart-{port}.lock"
    with path.open("a") as lock:
        limit = start_timeout(900)  # other runs' whole quickstarts may be queued before ours

        def acquired() -> bool:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        wait_ready(acquired, f"the README quickstart lock {path}", timeout=limit, interval=0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def quickstart(
    readme: Path, workdir: Path, *, drop_env: Iterable[str] = ("CYCLES_",)
) -> Iterator[Quickstart]:
    """A fresh environment (``HOME`` and data dir under ``workdir``) to run ``readme``'s
    quickstart in, for the ``with`` block. Environment variables starting with a ``drop_env``
    prefix are removed (``CYCLES_*``, ``RUNCYCLES_*``, ``REDIS_URL`` and ``ADMIN_API_KEY``
    always are)."""
    blocks = readme_blocks(readme)
    assert set(blocks) >= {"shell", "python"}, f"{readme} lost its quickstart markers"
    assert blocks["shell"].startswith(_SERVER_LINE), (
        f"the shell block must start the server with {_SERVER_LINE!r}"
    )
    prefixes = (*_ALWAYS_DROPPED, *drop_env)
    env: dict[str, Any] = {
        **{k: v for k, v in os.environ.items() if not k.startswith(prefixes)},
        "HOME": str(workdir),  # the default data dir (and admin key file) lands here
        "XDG_DATA_HOME": str(workdir / "data"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    q = Quickstart(blocks=blocks, env=env, workdir=workdir)
    with _turn(q.port):
        # A previous run's server may still be letting go of the port.
        started = time.monotonic()
        with contextlib.suppress(RuntimeError):
            wait_ready(lambda: _port_free(q.port), "port", timeout=start_timeout(30))
        if not _port_free(q.port):
            raise AssertionError(
                f"port {q.port}, which the quickstart in {readme} serves on, has been taken by "
                f"another process for {time.monotonic() - started:.0f} s (a running "
                "`runcycles-server-lite` or `nox -s serve`?); stop it to run the quickstart as "
                "written"
            )
        try:
            yield q
        finally:
            q._stop()
