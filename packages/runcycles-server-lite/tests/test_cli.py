"""The console script: serving (with --admin-port) as a real subprocess, and the admin
subcommands talking to it over HTTP."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runcycles_server_lite.testing import (
    free_port,
    group_members,
    http_ok,
    process_group,
    run,
    start_timeout,
    wait_ready,
)

SCRIPT = str(Path(sys.executable).parent / "runcycles-server-lite")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ADMIN_API_KEY")}
    env.pop("RUNCYCLES_URL", None)
    return env


def children(pid: int, name: str) -> list[int]:
    """Pids of ``pid``'s live children whose command is ``name`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid) and fields.get("Name", "").strip() == name:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    admin_url: str
    data_dir: Path
    stdout: Path


def serve_args(port: int, data_dir: Path, workers: int = 1, *extra: str) -> list[str]:
    return [
        SCRIPT,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "warning",
        "--workers",
        str(workers),
        *extra,
    ]


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    workers = getattr(request, "param", 1)
    port, admin_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    out = tmp_path / "stdout.txt"
    args = serve_args(port, data_dir, workers, "--admin-port", str(admin_port))
    url = f"http://127.0.0.1:{port}"
    # The server owns its process group (workers and embedded store included); the whole
    # group is stopped when the test ends, also if it never became ready.
    with (
        out.open("wb") as sink,
        process_group(args, stdout=sink, stderr=subprocess.STDOUT, env=clean_env()) as proc,
    ):
        wait_ready(http_ok(f"{url}/actuator/health"), "runcycles-server-lite", proc=proc, log=out)
        yield Served(proc, url, f"http://127.0.0.1:{admin_port}", data_dir, out)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(
        [SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=start_timeout(),
        env=env or clean_env(),
    )


@pytest.mark.parametrize("served", [1, 2], indirect=True, ids=["1-worker", "2-workers"])
def test_serve_prints_a_working_admin_key_and_stops_cleanly_on_sigterm(served: Served) -> None:
    printed = served.stdout.read_text()
    line = next(ln for ln in printed.splitlines() if "X-Admin-API-Key:" in ln)
    key = line.split("X-Admin-API-Key:")[1].strip()
    assert (served.data_dir / "admin-api-key").read_text().strip() == key
    assert (served.data_dir / "admin-api-key").stat().st_mode & 0o077 == 0
    headers = {"X-Admin-API-Key": key}
    assert httpx.get(f"{served.url}/v1/admin/tenants", headers=headers).status_code == 200
    wrong = {"X-Admin-API-Key": key + "x"}
    assert httpx.get(f"{served.url}/v1/admin/tenants", headers=wrong).status_code == 401
    # The admin listener serves the admin plane (and health), not the runtime plane.
    assert httpx.get(f"{served.admin_url}/v1/admin/tenants", headers=headers).status_code == 200
    assert httpx.get(f"{served.admin_url}/actuator/health").status_code == 200
    assert httpx.post(f"{served.admin_url}/v1/reservations", json={}).status_code == 404

    # Whichever worker answers, it sees what another one wrote (one shared store).
    with httpx.Client(base_url=served.url, headers=headers) as http:
        for i in range(6):
            assert (
                http.post(
                    "/v1/admin/tenants", json={"tenant_id": f"w-{i}", "name": "w"}
                ).status_code
                == 201
            )
            with httpx.Client(base_url=served.url, headers=headers) as fresh:
                assert fresh.get(f"/v1/admin/tenants/w-{i}").status_code == 200

    stores = children(served.proc.pid, "redis-server")
    assert len(stores) == 1
    workers = children(served.proc.pid, "python") + children(served.proc.pid, "python3")
    metrics_dir = _check_metrics_sum_over_workers(served.url, workers)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(start_timeout(30)) == 0
    deadline = time.monotonic() + start_timeout(10)
    while any(map(alive, stores + workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(stores[0]), "the embedded redis-server outlived the server"
    assert not any(map(alive, workers)), "a worker outlived the server"
    if metrics_dir is not None:
        assert not metrics_dir.exists(), "the multiprocess metrics folder was left behind"


def _check_metrics_sum_over_workers(url: str, workers: list[int]) -> Path | None:
    """Every scrape reports the six creates and six reads above, whichever worker answers;
    with two workers, both wrote counters to the shared multiprocess folder."""
    for _ in range(4):
        text = httpx.get(f"{url}/metrics").text  # a fresh connection each time
        counts = {
            (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "cycles_http_requests"
            for s in family.samples
            if s.name == "cycles_http_requests_total"
        }
        assert counts[("/v1/admin/tenants", "POST", "201")] == 6
        assert counts[("/v1/admin/tenants/{tenant_id}", "GET", "200")] == 6
    if len(workers) < 2:
        return None
    for _ in range(30):  # fresh connections, so the kernel hands some to each worker
        assert httpx.get(f"{url}/healthz").status_code == 200
    env = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
    found = [e.split(b"=", 1)[1] for e in env if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    assert found, "workers run without prometheus-client's multiprocess folder"
    folder = Path(found[0].decode())
    writers = {p.stem.rsplit("_", 1)[-1] for p in folder.glob("counter_*.db")}
    assert len(writers) >= 2, f"only {writers} wrote counters: the requests reached one worker"
    return folder


@pytest.mark.parametrize("workers", [1, 2])
def test_a_start_that_fails_leaves_nothing_behind(tmp_path: Path, workers: int) -> None:
    """The fixture's teardown when readiness fails: the real tree comes up (workers listening,
    embedded store running), then the start is declared failed; nothing may survive it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "out.txt"
    with (
        pytest.raises(RuntimeError, match="never ready: not ready within"),
        log.open("wb") as sink,
        process_group(
            serve_args(port, tmp_path / "d", workers),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        ) as proc,
    ):
        pgid = proc.pid
        wait_ready(http_ok(f"{url}/actuator/health"), "server", proc=proc, log=log)
        tree = group_members(pgid)
        stores = children(proc.pid, "redis-server")
        assert len(stores) == 1 and set(stores) < set(tree)
        assert len(tree) >= 2 + (workers > 1) * workers  # server, store (+ workers)
        wait_ready(lambda: False, "never ready", proc=proc, timeout=0.1)
    assert group_members(pgid) == []
    assert not any(map(alive, tree)), "a process of the failed start survived it"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_admin_command_waits_for_a_server_that_is_still_starting(tmp_path: Path) -> None:
    """What a script does right after `runcycles-server-lite &`: the command is issued before
    the server listens or has written its admin key, and succeeds once it is up."""
    port = free_port()
    data_dir = tmp_path / "d"
    url = f"http://127.0.0.1:{port}"
    command = [SCRIPT, "tenant", "create", "early", "--url", url, "--data-dir", str(data_dir)]
    with process_group(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    ) as early:
        assert not (data_dir / "admin-api-key").exists()
        with process_group(
            serve_args(port, data_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=clean_env(),
        ):
            out, err = early.communicate(timeout=start_timeout())
        assert early.returncode == 0, err
        assert "created tenant early" in out


def test_admin_command_gives_up_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    r = cli("tenant", "create", "x", "--url", url, "--admin-key", "k", "--wait", "1.5")
    assert r.returncode == 1
    assert time.monotonic() - started >= 1.5
    assert f"no server answered at {url} within 1.5 s" in r.stderr
    assert "--wait SECONDS" in r.stderr


def test_admin_subcommands(served: Served) -> None:
    common = ["--url", served.admin_url, "--data-dir", str(served.data_dir)]
    r = cli("tenant", "create", "cli-acme", "--name", "Acme", *common)
    assert r.returncode == 0, r.stderr
    assert "created tenant cli-acme" in r.stdout
    r = cli("tenant", "create", "cli-acme", "--name", "Acme", *common)
    assert r.returncode == 0
    assert "exists" in r.stdout

    r = cli("key", "create", "cli-acme", "--name", "agents", *common)
    assert r.returncode == 0, r.stderr
    agent = r.stdout.strip()
    assert agent.startswith("cyc_live_")
    assert "shown only once" in r.stderr
    r = cli("key", "create", "cli-acme", "--name", "ops", "--profile", "operator", *common)
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    r = cli("key", "create", "cli-acme", "--permission", "balances:read", *common)
    narrow = r.stdout.strip()

    r = cli("budget", "set", "tenant:cli-acme", "5000000", *common)
    assert r.returncode == 0, r.stderr
    assert "created tenant:cli-acme" in r.stdout
    r = cli("budget", "set", "workspace:prod", "1000", "--tenant", "cli-acme", *common)
    assert r.returncode == 0, r.stderr
    r = cli("budget", "set", "tenant:cli-acme/workspace:prod", "2500", *common)
    assert r.returncode == 0, r.stderr
    assert "1,000 -> 2,500" in r.stdout
    r = cli("budget", "set", "tenant:cli-acme", "7", "--unit", "TOKENS", *common)
    assert r.returncode == 0, r.stderr

    # The operator key has the spec's default permissions; the default (agent) key only the
    # runtime plane: it reads balances and reserves, but cannot read or write budgets.
    with httpx.Client(base_url=served.url) as http:
        as_agent = {"X-Cycles-API-Key": agent}
        assert http.get("/v1/admin/budgets", headers=as_agent).status_code == 403
        assert http.get("/v1/balances", headers=as_agent, params={"tenant": "cli-acme"}).is_success
        fund = http.post(
            "/v1/admin/budgets/fund",
            headers=as_agent,
            params={"tenant_id": "cli-acme", "scope": "tenant:cli-acme", "unit": "USD_MICROCENTS"},
            json={"operation": "CREDIT", "amount": {"unit": "USD_MICROCENTS", "amount": 1}},
        )
        assert fund.status_code == 403, fund.text
        reserve = http.post(
            "/v1/reservations",
            headers=as_agent,
            json={
                "idempotency_key": "cli-agent-1",
                "subject": {"tenant": "cli-acme"},
                "action": {"kind": "llm.completion", "name": "m"},
                "estimate": {"unit": "USD_MICROCENTS", "amount": 10},
            },
        )
        assert reserve.status_code == 200, reserve.text
        r2 = http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": secret})
        assert r2.status_code == 200
        assert len(r2.json()["ledgers"]) == 3
        assert (
            http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": narrow}).status_code == 403
        )

    r = cli("balances", "cli-acme", *common)
    assert r.returncode == 0, r.stderr
    assert "tenant:cli-acme/workspace:prod" in r.stdout
    assert "2,500" in r.stdout
    assert "5,000,000" in r.stdout
    assert "TOKENS" in r.stdout

    r = cli("balances", "cli-nobody", *common)
    assert r.returncode == 1
    assert "TENANT_NOT_FOUND" in r.stderr
    r = cli("tenant", "create", "x", "--url", served.url, "--admin-key", "wrong")
    assert r.returncode == 1
    assert "401" in r.stderr
    env = {**clean_env(), "RUNCYCLES_URL": served.url, "ADMIN_API_KEY": "also-wrong"}
    r = cli("tenant", "create", "cli-other", env=env)
    assert r.returncode == 1
    dead = ("--url", "http://127.0.0.1:1", "--admin-key", "k", "--wait", "0")
    r = cli("tenant", "create", "cli-other", *dead)
    assert r.returncode == 1
    assert "cannot reach" in r.stderr


def test_admin_command_without_any_key_says_how_to_get_one(tmp_path: Path) -> None:
    r = cli("tenant", "create", "x", "--data-dir", str(tmp_path / "empty"), "--wait", "0")
    assert r.returncode == 1
    assert "no admin key" in r.stderr
    assert str(tmp_path / "empty") in r.stderr
    # --data-dir before the subcommand counts too.
    r = cli("--data-dir", str(tmp_path / "before"), "tenant", "create", "x", "--wait", "0")
    assert str(tmp_path / "before") in r.stderr


def test_a_busy_port_is_refused_before_the_banner(served: Served, tmp_path: Path) -> None:
    """A second server on the first one's port says so, names the flag, prints no banner and
    starts no store (its data dir stays empty)."""
    port = served.url.rsplit(":", 1)[1]
    second = tmp_path / "second"
    r = run(
        serve_args(int(port), second),
        capture_output=True,
        text=True,
        timeout=start_timeout(),
        env=clean_env(),
    )
    assert r.returncode == 3, r.stderr
    assert "serving" not in r.stdout
    assert f"a runcycles-server-lite is already serving http://127.0.0.1:{port}" in r.stderr
    assert "--port PORT" in r.stderr
    assert "Traceback" not in r.stderr
    assert not second.exists() or not any(second.iterdir())


def test_a_port_held_by_another_process_is_named(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        r = run(
            serve_args(port, tmp_path / "d"),
            capture_output=True,
            text=True,
            timeout=start_timeout(),
            env=clean_env(),
        )
    assert r.returncode == 3, r.stderr
    assert f"another process is listening on 127.0.0.1:{port}" in r.stderr
    assert "serving" not in r.stdout


def test_embedded_store_keeps_a_webhook_sealing_key(served: Served) -> None:
    """First start writes the key that seals webhook secrets, owner-only, beside the admin key."""
    path = served.data_dir / "webhook-secret-key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(path.read_text().strip())) == 32


def test_a_bad_webhook_key_is_refused_before_the_banner(tmp_path: Path) -> None:
    env = {**clean_env(), "WEBHOOK_SECRET_ENCRYPTION_KEY": "dG9vIHNob3J0"}
    r = run(
        serve_args(free_port(), tmp_path / "d"),
        capture_output=True,
        text=True,
        timeout=start_timeout(),
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert "must decode to 32 bytes" in r.stderr
    assert "serving" not in r.stdout and "Traceback" not in r.stderr


def test_a_killed_embedded_store_is_restarted_with_its_data(served: Served) -> None:
    """kill -9 of redis-server: the server restarts it on the same data dir (AOF replayed),
    and the ledger written before answers again."""
    common = ["--url", served.admin_url, "--data-dir", str(served.data_dir)]
    assert cli("tenant", "create", "sup-acme", *common).returncode == 0
    assert cli("budget", "set", "tenant:sup-acme", "4200", *common).returncode == 0
    (store,) = children(served.proc.pid, "redis-server")
    os.kill(store, signal.SIGKILL)
    deadline = time.monotonic() + start_timeout(60)
    while True:
        restarted = [p for p in children(served.proc.pid, "redis-server") if p != store]
        if restarted and http_ok(f"{served.url}/actuator/health")():
            break
        assert time.monotonic() < deadline, "the embedded store was not restarted"
        time.sleep(0.2)
    r = cli("balances", "sup-acme", *common)
    assert r.returncode == 0, r.stderr
    assert "4,200" in r.stdout
    assert "restarting it on" in served.stdout.read_text()
