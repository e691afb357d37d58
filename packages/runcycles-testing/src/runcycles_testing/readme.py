"""Run a package README's quickstart as written, against the real server-lite console script.

A README marks its quickstart with ``<!-- quickstart:shell -->`` and ``<!-- quickstart:python -->``
before the code blocks. The shell block's first line must start the server in the background
(``runcycles-server-lite &``); :func:`quickstart` starts that server itself on a free port with
a fresh data dir (so the test owns and stops it), and :meth:`Quickstart.run` then executes the
remaining shell lines and the Python block exactly as written.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["Quickstart", "quickstart", "readme_blocks"]

_MARKED = re.compile(r"<!-- quickstart:(\w+) -->\s*```\w+\n(.*?)```", flags=re.S)
_SERVER_LINE = "runcycles-server-lite &"


def readme_blocks(readme: Path) -> dict[str, str]:
    """The marked quickstart blocks of ``readme``, by marker name."""
    return dict(_MARKED.findall(readme.read_text(encoding="utf-8")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Quickstart:
    """A README quickstart with its server running: :meth:`run` the rest of it."""

    blocks: dict[str, str]
    port: int
    env: dict[str, str]
    workdir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, extra_shell: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The shell block after its server line, then ``extra_shell``, then the Python block."""
        rest = self.blocks["shell"].replace("7878", str(self.port)).split("\n", 1)[1]
        script = self.workdir / "quickstart.py"
        script.write_text(textwrap.dedent(self.blocks["python"]), encoding="utf-8")
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{rest}\n{extra_shell}\n{sys.executable} {script}"],
            env={**self.env, "CYCLES_JOURNAL_DIR": str(self.workdir / "journal")},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``runcycles-server-lite ARGS`` against this quickstart's server."""
        return subprocess.run(
            ["runcycles-server-lite", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@contextlib.contextmanager
def quickstart(
    readme: Path, workdir: Path, *, drop_env: Iterable[str] = ("CYCLES_",)
) -> Iterator[Quickstart]:
    """Start the quickstart's server (fresh HOME and data dir under ``workdir``, free port) for
    the ``with`` block. Environment variables starting with ``drop_env`` prefixes are removed,
    so the README is tested as a new user would run it."""
    blocks = readme_blocks(readme)
    assert set(blocks) >= {"shell", "python"}, f"{readme} lost its quickstart markers"
    assert blocks["shell"].startswith(_SERVER_LINE), (
        f"the shell block must start with {_SERVER_LINE!r}"
    )
    port = _free_port()
    prefixes = tuple(drop_env)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(prefixes)},
        "HOME": str(workdir),  # the default data dir (and admin key file) lands here
        "XDG_DATA_HOME": str(workdir / "data"),
        "RUNCYCLES_PORT": str(port),
        "RUNCYCLES_URL": f"http://127.0.0.1:{port}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    server = subprocess.Popen(
        ["runcycles-server-lite", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/actuator/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "the quickstart's server exited"
            assert time.monotonic() < deadline, "the quickstart's server did not become healthy"
            time.sleep(0.1)
        yield Quickstart(blocks=blocks, port=port, env=env, workdir=workdir)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
