"""Sample the server's Python stacks with py-spy while reserve load runs, and summarize where
the time goes: by component (inclusive) and by function (self)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from runcycles_server_lite.testing import spawn

from .report import Tab

# Each sample goes to the component of its deepest (leaf-most) frame that matches one, so the
# shares partition the busy samples: pydantic under payload_hash counts as payload_hash, asyncio
# stream writes under redis-py count as redis-py. asyncio only takes what nothing else claims.
COMPONENTS: dict[str, str] = {
    "redis-py: EVALSHA pack/send/parse + pool": r"\(redis/",
    "payload_hash (model_dump + sha256)": r"^payload_hash ",
    "parse (pydantic request model)": r"^parse \(runcycles_server_lite/models",
    "dumps (subject/action JSON)": r"^dumps \(runcycles_server_lite/models",
    "read_json (body + orjson)": r"^read_json ",
    "auth (API key, cached)": r"\(runcycles_server_lite/auth",
    "ids (uuid4, secrets)": r"\(uuid\.py|\(secrets\.py",
    "uvicorn + httptools (HTTP, transport writes)": r"\(uvicorn/",
    "starlette routing/request/response": r"\(starlette/",
    "server-lite own code (handler, middleware)": r"\(runcycles_server_lite/",
}
_ASYNCIO = re.compile(r"\(asyncio/|\(contextlib\.py")
# Every stack starts with the CLI and uvicorn.run down to the loop's run call; what the loop
# calls back is below it. A sample with nothing below it is the loop itself (uvloop, native).
_LOOP = re.compile(r"^Runner\.run \(asyncio/runners\.py")


def start(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` for ``seconds`` in raw (collapsed stacks) format."""
    exe = Path(sys.executable).parent / "py-spy"
    return spawn(  # its own process group: the caller stops it with stop_group
        [
            str(exe),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in COMPONENTS.items():
            if re.search(pattern, frame):
                return name
    if any(_ASYNCIO.search(f) for f in frames):
        return "asyncio (tasks, streams, timeouts)"
    return "other"


def summarize(raw: Path, ops: int, top: int = 15) -> list[Tab]:
    """Component and self-time tables from py-spy's collapsed stacks."""
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            stacks.append((stack.split(";"), int(samples)))
    total = sum(c for _, c in stacks) or 1
    comp: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, count in stacks:
        cut = next((i for i, f in enumerate(frames) if _LOOP.match(f)), -1)
        if cut >= 0 and cut == len(frames) - 1:
            comp["event loop itself (uvloop, native)"] += count
            leaf[re.sub(r":\d+\)$", ")", frames[-1])] += count
            continue
        comp[_component(frames[cut + 1 :])] += count
        leaf[re.sub(r":\d+\)$", ")", frames[-1])] += count
    per_op_note = f"{total} samples while {ops} reserves were served; 100% = all busy samples"
    by_comp = Tab(
        "Reserve hot path: server busy samples by component (py-spy, 50 clients, 1 worker)",
        ["component", "share"],
        notes=[
            per_op_note,
            "each sample counted once, for the deepest frame on its stack that names a component",
        ],
    )
    for name, n in comp.most_common():
        by_comp.add(name, f"{100 * n / total:.1f}%")
    by_self = Tab("Reserve hot path, top functions by self time", ["function", "share"])
    for name, n in leaf.most_common(top):
        by_self.add(name, f"{100 * n / total:.1f}%")
    return [by_comp, by_self]
