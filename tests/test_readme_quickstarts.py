"""The README quickstarts run as written: the shell block against the real console script
(embedded store, fresh data dir, free port), then the Python block against that server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _blocks(readme: Path) -> dict[str, str]:
    text = readme.read_text(encoding="utf-8")
    found = re.findall(r"<!-- quickstart:(\w+) -->\s*```\w+\n(.*?)```", text, flags=re.S)
    return dict(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_core_decorator_quickstart(tmp_path: Path) -> None:
    blocks = _blocks(ROOT / "packages" / "runcycles-core" / "README.md")
    assert set(blocks) >= {"shell", "python"}, "README lost its quickstart markers"
    port = _free_port()
    shell = blocks["shell"].replace("7878", str(port))
    # The first line starts the server in the background; run it ourselves so the test owns
    # (and stops) the process, then run the remaining lines exactly as written.
    first, rest = shell.split("\n", 1)
    assert first.startswith("runcycles-server-lite &")
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # the default data dir (and admin key file) lands here
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "RUNCYCLES_PORT": str(port),
        "RUNCYCLES_URL": f"http://127.0.0.1:{port}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    server = subprocess.Popen(
        ["runcycles-server-lite", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
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
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.1)
        script = tmp_path / "quickstart.py"
        script.write_text(textwrap.dedent(blocks["python"]), encoding="utf-8")
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{rest}\n{sys.executable} {script}"],
            env={**env, "CYCLES_JOURNAL_DIR": str(tmp_path / "journal")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.strip().splitlines()[-1] == "42"
        # The committed actual is on the ledger.
        balances = subprocess.run(
            ["runcycles-server-lite", "balances", "acme"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert balances.returncode == 0, balances.stderr
        assert "1500000" in balances.stdout.replace(",", "").replace("_", "")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
