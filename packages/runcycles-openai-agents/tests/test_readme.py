"""The README quickstart runs as written: its shell block against the real server-lite console
script (embedded store, fresh data dir, free port), then its Python block against that server."""

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

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"<!-- quickstart:(\w+) -->\s*```\w+\n(.*?)```", text, flags=re.S)
    return dict(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    quickstart = blocks()
    assert set(quickstart) == {"shell", "python"}, "README lost its quickstart markers"
    assert len(quickstart["python"].strip().splitlines()) <= 6
    port = free_port()
    first, rest = quickstart["shell"].replace("7878", str(port)).split("\n", 1)
    # The first line starts the server in the background; the test starts it itself so that it
    # owns (and stops) the process, then runs the remaining lines exactly as written.
    assert first.startswith("runcycles-server-lite &")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "OPENAI_"))},
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
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
            assert server.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.1)
        script = tmp_path / "quickstart.py"
        script.write_text(textwrap.dedent(quickstart["python"]), encoding="utf-8")
        run = subprocess.run(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                f"{rest}\nprintenv CYCLES_API_KEY > {tmp_path / 'key'}\n{sys.executable} {script}",
            ],
            env={**env, "CYCLES_JOURNAL_DIR": str(tmp_path / "journal")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.strip().splitlines()[-1] == "42"
        # The call was reserved and committed: spent > 0, nothing left held.
        key = (tmp_path / "key").read_text().strip()
        reply = httpx.get(
            f"http://127.0.0.1:{port}/v1/balances",
            params={"tenant": "acme"},
            headers={"X-Cycles-API-Key": key},
        )
        assert reply.status_code == 200, reply.text
        (acme,) = [b for b in reply.json()["balances"] if b["scope"] == "tenant:acme"]
        assert acme["spent"]["amount"] > 0
        assert acme.get("reserved", {"amount": 0})["amount"] == 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
