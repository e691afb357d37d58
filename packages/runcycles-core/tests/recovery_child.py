"""A separate OS process for the client-recovery restart and concurrency scenarios.

``python recovery_child.py '<json plan>'`` runs one of two roles against a real server:

* ``run``: guard one action through the lifecycle (``guard(...)`` → ``add_usage`` → commit);
* ``replay``: start as a fresh process from the journal alone (``settler_for(client).flush()``).

The plan's ``die_on`` makes the process ``os._exit(9)`` on the first request of that operation
(optionally after forwarding it to the server, i.e. with the response lost); ``die_after_settle``
kills it right after the first settlement attempt returned. Before dying it writes an evidence
file: every request it sent and the journal files as they were on disk at the fatal request.
``barrier`` synchronizes independent workers (on start, or just before forwarding a commit).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

import runcycles_core as rc
from runcycles_core.decorator import guard
from runcycles_core.settlement import journal_for, settler_for

EXIT_KILLED = 9


def op_of(request: httpx.Request) -> str:
    """The protocol operation a request performs (commit, event, extend, reserve, ...)."""
    path = request.url.path
    if request.method == "POST" and path == "/v1/events":
        return "event"
    if request.method == "POST" and path == "/v1/reservations":
        return "reserve"
    if request.method == "POST" and path.startswith("/v1/reservations/"):
        return path.rsplit("/", 1)[-1]
    return request.method.lower() + " " + path


class Plan:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.config = rc.CyclesConfig(**raw["config"])
        self.evidence = Path(raw["evidence"])
        self.requests: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {}

    def journal_files(self) -> dict[str, Any]:
        part = journal_for(self.config).path
        return {p.name: json.loads(p.read_bytes()) for p in sorted(part.glob("v2-*.json"))}

    def write_evidence(self, **extra: Any) -> None:
        data = {"requests": self.requests, **self.result, **extra}
        tmp = self.evidence.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.evidence)

    def barrier(self, where: str) -> None:
        spec = self.raw.get("barrier")
        if not spec or spec["at"] != where:
            return
        directory = Path(spec["dir"])
        (directory / spec["name"]).touch()
        deadline = time.monotonic() + 20
        while len(list(directory.iterdir())) < spec["count"]:
            if time.monotonic() > deadline:
                raise SystemExit("barrier timed out")
            time.sleep(0.005)


class Transport(httpx.BaseTransport):
    """The real transport, plus the plan's faults and a log of every request."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        plan, raw = self.plan, self.plan.raw
        op = op_of(request)
        seen: dict[str, Any] = {
            "op": op,
            "path": request.url.path,
            "key": request.headers.get("x-idempotency-key"),
            "body": json.loads(request.content) if request.content else None,
            "at": time.time(),
        }
        plan.requests.append(seen)
        die = raw.get("die_on")
        if die and die["op"] == op:
            on_disk = plan.journal_files()
            if die.get("forward"):
                self.inner.handle_request(request).read()
            plan.write_evidence(journal_at_death=on_disk)
            os._exit(EXIT_KILLED)
        if op == "commit" and raw.get("reply_429") is not None:
            seen["status"] = 429
            return httpx.Response(
                429,
                json={"error": "RATE_LIMITED", "message": "slow down", "request_id": "r"},
                headers={"Retry-After": str(raw["reply_429"])},
            )
        if op == "commit":
            plan.barrier("commit")
            time.sleep(raw.get("delay_commit_s", 0))
            seen["sent_at"] = time.time()
        response = self.inner.handle_request(request)
        response.read()
        seen["status"] = response.status_code
        return response


def main() -> None:
    plan = Plan(json.loads(sys.argv[1]))
    client = rc.CyclesClient(plan.config, transport=Transport(plan))
    if plan.raw["role"] == "run":
        g = plan.raw["guard"]
        with guard(
            g["estimate"],
            client=client,
            action_kind="llm.completion",
            action_name="openai:gpt-4o",
            ttl_ms=g.get("ttl_ms", 60_000),
            grace_period_ms=g.get("grace_period_ms"),
            heartbeat=False,
            idempotency_key=g["idempotency_key"],
        ) as h:
            plan.result["reservation_id"] = h.reservation_id
            plan.result["expires_at_ms"] = h.expires_at_ms
            h.add_usage(g["actual"])
        assert h.settlement is not None
        plan.result["settlement"] = {
            "settled": h.settlement.settled,
            "pending": h.settlement.pending,
        }
        if plan.raw.get("die_after_settle"):
            plan.write_evidence(journal_at_death=plan.journal_files())
            os._exit(EXIT_KILLED)
    else:
        plan.barrier("start")
        plan.result["flushed"] = settler_for(client).flush(timeout=plan.raw.get("flush_s", 15))
    plan.write_evidence(journal_at_exit=plan.journal_files())
    client.close()


if __name__ == "__main__":
    main()
