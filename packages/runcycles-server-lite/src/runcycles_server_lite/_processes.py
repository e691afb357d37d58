"""Child processes that own their process group: started in a new session, stopped as a group.

A test (or the benchmark) that starts a server starts a tree: the console script, its uvicorn
workers, maybe a redis-server. Killing only the process it started can leave the rest running
(a worker still listening on the port half an hour later). Everything here starts the child
with ``start_new_session=True`` and stops it by signalling the whole group: SIGTERM, a bounded
wait for every member to exit, then SIGKILL. Waits for readiness are polled against one
deadline helper, :func:`start_timeout`, whose default is generous for a loaded machine and
which ``RUNCYCLES_TEST_TIMEOUT_SCALE`` scales further.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

TIMEOUT_SCALE_ENV = "RUNCYCLES_TEST_TIMEOUT_SCALE"
DEFAULT_START_TIMEOUT_S = 120.0

Args = Sequence[str | os.PathLike[str]]


def start_timeout(seconds: float = DEFAULT_START_TIMEOUT_S) -> float:
    """How long to wait for something just started to become ready: ``seconds`` (120 by
    default, enough for a cold start on a 2-core machine under a load average of 8) times
    ``$RUNCYCLES_TEST_TIMEOUT_SCALE`` (default 1)."""
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "").strip()
    try:
        scale = float(raw) if raw else 1.0
    except ValueError:
        raise ValueError(f"{TIMEOUT_SCALE_ENV} must be a number, got {raw!r}") from None
    if scale <= 0:
        raise ValueError(f"{TIMEOUT_SCALE_ENV} must be positive, got {raw!r}")
    return seconds * scale


def spawn(args: Args, **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **popen)`` in a new session: the child leads its own process
    group, so :func:`stop_group` reaches everything it starts (unless that starts a session of
    its own)."""
    popen["start_new_session"] = True
    return subprocess.Popen(args, **popen)


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs: ask the kernel whether the group still exists
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(proc: subprocess.Popen[Any], deadline: float) -> bool:
    while True:
        proc.poll()  # reap the leader as soon as it exits
        if not group_members(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def stop_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop the process group ``proc`` leads (started by :func:`spawn`): SIGTERM to every
    member, up to ``grace`` seconds for all of them to exit, then SIGKILL to what is left.
    Also when ``proc`` itself has already exited (its children may not have). Reaps ``proc``
    and closes its pipes."""
    pgid = proc.pid
    try:
        if group_members(pgid):
            _signal_group(pgid, signal.SIGTERM)
            if not _wait_group_gone(proc, time.monotonic() + grace):
                _signal_group(pgid, signal.SIGKILL)
                if not _wait_group_gone(proc, time.monotonic() + 10):
                    raise RuntimeError(
                        f"process group {pgid} ({_name(proc)}) survived SIGKILL: "
                        f"{group_members(pgid)}"
                    )
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _name(proc: subprocess.Popen[Any]) -> str:
    args = proc.args
    if isinstance(args, (str, bytes, os.PathLike)):
        return str(args)
    return " ".join(str(a) for a in args)[:200]


@contextlib.contextmanager
def process_group(
    args: Args, *, grace: float = 10.0, **popen: Any
) -> Iterator[subprocess.Popen[Any]]:
    """:func:`spawn` for the ``with`` block; the whole group is stopped when it ends, however
    it ends (a failed readiness check, an exception, Ctrl-C)."""
    proc = spawn(args, **popen)
    try:
        yield proc
    finally:
        stop_group(proc, grace=grace)


def run(
    args: Args,
    *,
    timeout: float | None = None,
    input: str | bytes | None = None,
    capture_output: bool = False,
    check: bool = False,
    **popen: Any,
) -> subprocess.CompletedProcess[Any]:
    """Like :func:`subprocess.run`, but the child owns its process group and the whole group is
    stopped when the call returns: on a timeout or any exception before the child exits, and
    afterwards too, so nothing the child left in its group outlives the call."""
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    if capture_output:
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    proc = spawn(args, **popen)
    try:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            stop_group(proc)
            raise subprocess.TimeoutExpired(
                proc.args, exc.timeout, output=exc.output, stderr=exc.stderr
            ) from None
    finally:
        stop_group(proc)
    assert proc.returncode is not None
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_ready(
    ready: Callable[[], bool],
    what: str,
    *,
    proc: subprocess.Popen[Any] | None = None,
    timeout: float | None = None,
    log: Path | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``ready()`` until it is true. Raises :class:`RuntimeError` naming ``what`` (with the
    tail of ``log`` if given) when ``proc`` exits first or :func:`start_timeout` (or
    ``timeout``) seconds pass."""
    limit = start_timeout() if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            problem = f"{what}: process exited with status {proc.returncode} before it was ready"
            break
        if time.monotonic() >= deadline:
            problem = f"{what}: not ready within {limit:g} s (scale with {TIMEOUT_SCALE_ENV})"
            break
        time.sleep(interval)
    if log is not None and log.exists():
        problem += "\n" + log.read_text(errors="replace")[-4000:]
    raise RuntimeError(problem)


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: ``GET url`` answers 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


__all__ = [
    "DEFAULT_START_TIMEOUT_S",
    "TIMEOUT_SCALE_ENV",
    "group_members",
    "http_ok",
    "process_group",
    "run",
    "spawn",
    "start_timeout",
    "stop_group",
    "wait_ready",
]
