"""``python -m bench.run``: the whole benchmark in one run, printed as tables.

Server figures come from load generated in this process against servers in child processes;
see README.md here for what each figure means and what limits it on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import psutil
from rich.console import Console

from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import start_timeout, stop_group

from . import client_overhead, memory, profile_hotpath, script_cost
from . import server_load as sl
from . import workload as wl
from .procs import background_load, hello_world, server_lite
from .report import Tab, mib, ms, num, ratio

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coro)
    return uvloop.run(coro)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50, 200])
    p.add_argument("--seconds", type=float, default=None, help="measured window per cell (3)")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured warm-up per cell (0.5)")
    p.add_argument("--max-ops", type=int, default=100_000, help="operation cap per cell")
    p.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp")
    p.add_argument("--calls", type=int, default=None, help="calls per client variant (300)")
    p.add_argument("--memory-n", type=int, default=None, help="reservations for memory (2000)")
    p.add_argument("--profile", action="store_true", help="py-spy the reserve hot path")
    p.add_argument("--quick", action="store_true", help="1 s cells, fewer calls (smoke run)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    p.add_argument(
        "--memory-only",
        action="store_true",
        help="only the Redis memory part (one 1-worker server, no load, no timings)",
    )
    p.add_argument(
        "--client-only",
        action="store_true",
        help="only the client-overhead part (one 1-worker server, --calls per variant)",
    )
    ns = p.parse_args(argv)
    # --quick changes the defaults only; explicit values win.
    defaults = (1.0, 0.2, 60, 300) if ns.quick else (3.0, 0.5, 300, 2000)
    for name, value in zip(("seconds", "warmup", "calls", "memory_n"), defaults, strict=True):
        if getattr(ns, name) is None:
            setattr(ns, name, value)
    return ns


def environment(ns: argparse.Namespace) -> list[str]:
    load1, _, _ = os.getloadavg()
    return [
        f"{platform.platform()}, Python {platform.python_version()}, "
        f"{psutil.cpu_count()} CPUs, load average {load1:.2f}",
        f"other processes used {background_load():.0f}% of one core in the second before the run",
        f"load generator: this process (pid {os.getpid()}), {ns.client} on uvloop, loopback TCP; "
        "servers: child processes (uvicorn, --workers N), embedded redis-server on a unix socket",
        f"cells: {ns.warmup:g} s warm-up + {ns.seconds:g} s measured (at most {ns.max_ops} ops), "
        "closed loop: each client sends its next request when the previous one answered",
    ]


def server_tables(
    ns: argparse.Namespace, console: Console
) -> tuple[list[Tab], list[sl.Row], dict[str, Any]]:
    spec = sl.CellSpec(ns.seconds, ns.max_ops, ns.warmup)
    rows: list[sl.Row] = []
    extra: dict[str, Any] = {"where": [], "ledger": [], "rss": {}}
    for workers in ns.workers:
        with server_lite(workers) as lite, hello_world(workers) as hello:
            extra["where"].append(f"{workers} worker(s): server-lite {lite.where()}")
            extra["where"].append(f"{workers} worker(s): hello-world {hello.where()}")
            for clients in ns.clients:
                for target in (sl.HELLO, sl.RESERVE, sl.LIFECYCLE):
                    served, ledger = (hello, None) if target == sl.HELLO else (lite, lite)
                    row = _run(sl.http_cell(served, ledger, target, clients, spec, ns.client))
                    rows.append(row)
                    _progress(console, row)
                if workers == ns.workers[0]:
                    for target in (sl.EVAL_TRIVIAL, sl.EVAL_RESERVE):
                        row = _run(sl.evalsha_cell(lite, target, clients, spec))
                        rows.append(row)
                        _progress(console, row)
            extra["ledger"].append((workers, _run(_all_ledgers(lite.redis_url))))
            if workers == ns.workers[0]:
                console.print("[dim]client overhead...[/dim]")
                extra["client"] = client_overhead.measure(lite, ns.calls)
                console.print("[dim]memory...[/dim]")
                extra["memory"] = memory.measure(lite, ns.memory_n)
                extra["rss_idle"] = lite.rss()
                console.print("[dim]Redis time per scope...[/dim]")
                extra["scopes"] = _run(script_cost.measure(lite.redis_url))
                if ns.profile:
                    console.print("[dim]profiling reserve at 50 clients...[/dim]")
                    extra["profile"] = _profile(lite, spec, ns.client)
    return _throughput_tables(rows, extra), rows, extra


def client_tables(
    ns: argparse.Namespace, console: Console
) -> tuple[list[Tab], list[sl.Row], dict[str, Any]]:
    """``--client-only``: the client-overhead part on its own 1-worker server."""
    extra: dict[str, Any] = {"ledger": []}
    with server_lite(1) as lite:
        console.print("[dim]client overhead...[/dim]")
        variants, _ = client_overhead.measure(lite, ns.calls)
        extra["ledger"].append((1, _run(_all_ledgers(lite.redis_url))))
    return [client_table(variants), targets_table([], variants)], [], extra


def memory_tables(
    ns: argparse.Namespace, console: Console
) -> tuple[list[Tab], list[sl.Row], dict[str, Any]]:
    """``--memory-only``: the memory part on its own 1-worker server."""
    extra: dict[str, Any] = {"ledger": []}
    with server_lite(1) as lite:
        console.print("[dim]memory...[/dim]")
        reports = memory.measure(lite, ns.memory_n)
        extra["ledger"].append((1, _run(_all_ledgers(lite.redis_url))))
        rss = lite.rss()
    return [memory_table(reports, rss), sizing_table(reports[0])], [], extra


async def _all_ledgers(redis_url: str) -> wl.LedgerCheck:
    store = Store.from_url(redis_url)
    try:
        return await wl.check_all_ledgers(store)
    finally:
        await store.close()


def _profile(lite: Any, spec: sl.CellSpec, client: str) -> list[Tab]:
    out = Path(tempfile.mkstemp(prefix="rcbench-pyspy-", suffix=".txt")[1])
    window = sl.CellSpec(max(spec.seconds, 4.0), spec.max_ops, 0.0)
    spy = profile_hotpath.start(lite.proc.pid, window.seconds, out)
    try:
        time.sleep(0.5)  # py-spy attaches (it has no readiness signal; a late attach only
        # shortens the sampled window)
        row = _run(sl.http_cell(lite, lite, sl.RESERVE, 50, window, client, tag="-profile"))
        spy.wait(timeout=start_timeout(60))
    finally:
        stop_group(spy)
    try:
        return profile_hotpath.summarize(out, row.result.ops)
    finally:
        out.unlink(missing_ok=True)


def _progress(console: Console, row: sl.Row) -> None:
    w = "-" if row.workers is None else str(row.workers)
    console.print(
        f"[dim]  {row.target:<20} workers {w} clients {row.clients:>3}: "
        f"{num(row.result.ops_per_s)} ops/s, p99 {ms(row.result.pct_ms(0.99))} ms[/dim]",
        highlight=False,
    )


def _find(rows: list[sl.Row], target: str, workers: int | None, clients: int) -> sl.Row | None:
    for r in rows:
        if r.target == target and r.workers == workers and r.clients == clients:
            return r
    return None


def _throughput_tables(rows: list[sl.Row], extra: dict[str, Any]) -> list[Tab]:
    tab = Tab(
        "Server throughput and latency (per operation; reserve+commit = one lifecycle)",
        [
            "target",
            "workers",
            "clients",
            "ops/s",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "ledger mismatches",
            "CPU % server/redis/load/other",
            "CPU µs/op server/redis",
            "Redis µs/EVALSHA",
            "req/s vs hello",
            "ops/s vs EVALSHA reserve.lua",
        ],
    )
    for r in rows:
        res = r.result
        hello = _find(rows, sl.HELLO, r.workers, r.clients)
        raw = _find(rows, sl.EVAL_RESERVE, None, r.clients)
        vs_hello = (
            ratio(res.requests_per_s, hello.result.requests_per_s)
            if hello and r.target in (sl.RESERVE, sl.LIFECYCLE)
            else "-"
        )
        vs_raw = (
            ratio(res.ops_per_s, raw.result.ops_per_s) if raw and r.target == sl.RESERVE else "-"
        )
        cpu = "/".join(f"{r.cpu_pct.get(k, 0):.0f}" for k in ("server", "redis", "load", "other"))
        # CPU time per operation does not depend on how much CPU other processes took.
        per_op = "/".join(
            f"{r.cpu_pct.get(k, 0) / 100 / res.ops_per_s * 1e6:.0f}" if res.ops else "-"
            for k in ("server", "redis")
        )
        tab.add(
            r.target,
            "-" if r.workers is None else r.workers,
            r.clients,
            num(res.ops_per_s),
            num(res.requests_per_s),
            ms(res.pct_ms(0.50)),
            ms(res.pct_ms(0.95)),
            ms(res.pct_ms(0.99)),
            res.errors if not res.first_error else f"{res.errors} ({res.first_error[:40]})",
            "-" if r.ledger is None else r.ledger.mismatches,
            cpu,
            per_op,
            "-" if r.evalsha_us is None else f"{r.evalsha_us:.0f}",
            vs_hello,
            vs_raw,
        )
    for workers, check in extra["ledger"]:
        tab.notes.append(
            f"after the {workers}-worker runs: {check.budgets} budgets read, "
            f"{check.identity_mismatches} violate remaining = allocated - spent - reserved - debt"
            + (f" ({check.detail})" if check.detail else "")
        )
    tab.notes.append(
        "ledger mismatches per cell: identity violations plus budgets whose reserved/spent differ "
        "from what the client's successful calls imply"
    )
    tab.notes.append(
        "CPU %: of one core, over the measured window; 'other' = the rest of the machine "
        "(processes outside this benchmark), i.e. noise"
    )
    tab.notes += extra["where"]
    peak = Tab("Server RSS under load (peak, sampled every 0.5 s)", ["workers", "server", "redis"])
    for workers in sorted({r.workers for r in rows if r.workers is not None}):
        s = max((r.peak_rss.get("server", 0) for r in rows if r.workers == workers), default=0)
        d = max((r.peak_rss.get("redis", 0) for r in rows if r.workers == workers), default=0)
        peak.add(workers, mib(s), mib(d))
    return [tab, peak]


def client_table(variants: list[client_overhead.Variant]) -> Tab:
    bare = variants[0].pct_ms(0.5)
    plain = next((v for v in variants if v.name.startswith("plain httpx")), variants[0])
    tab = Tab(
        "Client: one guarded call (reserve + commit) at a time, variants interleaved, 1 worker",
        [
            "variant",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "added vs bare p50",
            "over plain httpx p50",
            "÷ plain httpx p50",
            "client CPU ms/call",
        ],
        notes=[
            "the guarded function returns a constant; 'over plain httpx' is the library's own "
            "cost beyond the two HTTP requests",
        ],
    )
    for v in variants:
        p50 = v.pct_ms(0.5)
        tab.add(
            v.name,
            ms(p50),
            ms(v.pct_ms(0.95)),
            ms(v.pct_ms(0.99)),
            "-" if v is variants[0] else ms(p50 - bare),
            "-" if v is variants[0] or v is plain else ms(p50 - plain.pct_ms(0.5)),
            "-" if v is variants[0] or v is plain else f"{p50 / plain.pct_ms(0.5):.2f}x",
            f"{v.cpu_per_call_s * 1000:.3f}",
        )
    return tab


def memory_table(reports: list[memory.MemoryReport], rss_idle: dict[str, int]) -> Tab:
    tab = Tab(
        "Redis memory per reservation",
        [
            "redis config",
            "reservations",
            "bytes/active (keys)",
            "bytes/finalized (keys)",
            "bytes/active (INFO Δ)",
            "bytes/finalized (INFO Δ)",
        ],
        notes=[
            "keys: exact MEMORY USAGE of every reservation record (ACTIVE hash, finalized "
            "string), reserve and commit idempotency record and the tenant's two reservation "
            "indexes, / N; INFO Δ: used_memory growth / N (allocator overhead included)",
            f"goal: <= {memory.GOAL_BYTES_PER_FINALIZED:,} bytes per finalized reservation at "
            f"default settings; the layout before compact finalized records took "
            f"{memory.OLD_LAYOUT_BYTES_PER_FINALIZED:,} (INFO Δ, default config)",
        ],
    )
    for m in reports:
        tab.add(
            m.redis_config,
            m.reservations,
            num(m.keys_per_active),
            num(m.keys_per_finalized),
            num(m.bytes_per_active),
            num(m.bytes_per_finalized),
        )
    m = reports[0]
    day = 24 * 3600 * 1000
    tab.notes.append(
        f"finalized reservations are kept finalized_retention_ms = {m.retention_setting_ms} "
        f"({m.retention_setting_ms / day:g} days), idempotency records "
        f"{m.idempotency_setting_ms / day:g} days past finalization; measured PTTL of a "
        "committed reservation "
        f"{m.reservation_pttl_ms / day:.2f} days, of its reserve idempotency record "
        f"{m.idempotency_pttl_ms / day:.2f} days"
    )
    per_m = max(m.bytes_per_finalized, m.keys_per_finalized) * 1e6
    tab.notes.append(
        f"so 1M reservations a day keep ~{per_m * m.retention_setting_ms / day / 2**30:.0f} GiB "
        f"in Redis at steady state ({per_m / 2**30:.1f} GiB per million)"
    )
    tab.notes.append(
        f"idle RSS after the runs: server {mib(rss_idle.get('server', 0))}, "
        f"redis-server {mib(rss_idle.get('redis', 0))}"
    )
    return tab


SIZING_DAYS = ((30, 30), (30, 1), (7, 1), (1, 1))


def sizing_table(m: memory.MemoryReport) -> Tab:
    """Redis held per finalized reservation, and at steady state, for a few retentions."""
    tab = Tab(
        "Sizing (default redis config, measured key sizes scaled by INFO Δ / keys)",
        [
            "finalized retention (days)",
            "idempotency retention (days)",
            "bytes/reservation, idempotency window",
            "bytes/reservation, after it",
            "GiB per million",
            "GiB at 1M reservations/day",
        ],
        notes=[
            f"keys per finalized reservation: finalized record {num(m.finalized_record)}, "
            f"reserve idempotency {num(m.reserve_idempotency)}, commit idempotency "
            f"{num(m.commit_idempotency)}, indexes {num(m.indexes)} bytes (MEMORY USAGE / N)",
            "GiB per million: a million finalized reservations inside their idempotency window; "
            "steady state: 1M a day, each kept for the finalized retention, its idempotency "
            "records for the idempotency retention",
        ],
    )
    # Allocator overhead: what INFO used_memory saw beyond the keys' own MEMORY USAGE.
    scale = m.bytes_per_finalized / m.keys_per_finalized if m.keys_per_finalized else 1.0
    full = m.bytes_per_finalized
    after = (m.finalized_record + m.indexes) * scale
    for keep, idem in SIZING_DAYS:
        steady = 1e6 * (full * idem + after * (keep - idem)) / 2**30
        tab.add(keep, idem, num(full), num(after), f"{full * 1e6 / 2**30:.2f}", f"{steady:.1f}")
    return tab


def scope_cost_table(costs: list[script_cost.ScopeCost]) -> Tab:
    tab = Tab(
        "Redis time per call by budgeted scopes (INFO commandstats usec_per_call, serial)",
        ["scopes", "budgets", "reserve µs", "commit µs", "reserve µs per scope"],
        notes=[
            "every derived scope budgeted; 'per scope' = (n scopes - 1 scope) / (n - 1): what "
            "one more budgeted level adds to a reserve",
        ],
    )
    base = costs[0].reserve_us if costs else 0.0
    for c in costs:
        per = "-" if c.scopes == 1 else f"{(c.reserve_us - base) / (c.scopes - 1):.1f}"
        tab.add(c.scopes, c.scopes, f"{c.reserve_us:.1f}", f"{c.commit_us:.1f}", per)
    return tab


def targets_table(
    rows: list[sl.Row],
    variants: list[client_overhead.Variant],
    scopes: list[script_cost.ScopeCost] | None = None,
) -> Tab:
    tab = Tab(
        "Targets from issue 13",
        ["target", "goal", "measured", "met"],
        notes=[
            "the CPU ceiling ignores the load generator and any other process: the most this "
            "server could do if it had both cores to itself",
        ],
    )

    def best(target: str, clients: int) -> sl.Row | None:
        cands = [r for r in rows if r.target == target and r.clients == clients]
        return max(cands, key=lambda r: r.result.ops_per_s, default=None)

    r50 = best(sl.RESERVE, 50)
    if r50:
        tab.add(
            "reserves/s at 50 clients",
            ">= 8,000",
            f"{num(r50.result.ops_per_s)} ({r50.workers} worker(s))",
            "yes" if r50.result.ops_per_s >= 8000 else "no",
        )
        server_us = r50.cpu_pct.get("server", 0) / 100 / max(r50.result.ops_per_s, 1e-9) * 1e6
        redis_us = r50.cpu_pct.get("redis", 0) / 100 / max(r50.result.ops_per_s, 1e-9) * 1e6
        if server_us + redis_us > 0:
            ceiling = 2e6 / (server_us + redis_us)
            tab.add(
                "  CPU ceiling: 2 cores / (server + redis CPU per reserve)",
                ">= 8,000",
                f"{num(ceiling)} ({server_us:.0f} + {redis_us:.0f} µs)",
                "yes" if ceiling >= 8000 else "no",
            )
        hello = _find(rows, sl.HELLO, r50.workers, 50)
        if hello:
            x = r50.result.requests_per_s / hello.result.requests_per_s
            tab.add(
                "vs hello-world at 50 clients", ">= 0.4", f"{x:.2f}", "yes" if x >= 0.4 else "no"
            )
            hello_us = hello.cpu_pct.get("server", 0) / 100 / max(hello.result.ops_per_s, 1e-9)
            if server_us > 0 and hello_us > 0:
                y = hello_us * 1e6 / server_us
                tab.add(
                    "  by server CPU per request (hello ÷ reserve)",
                    ">= 0.4",
                    f"{y:.2f} ({hello_us * 1e6:.0f} vs {server_us:.0f} µs)",
                    "yes" if y >= 0.4 else "no",
                )
    singles = [r for r in rows if r.target == sl.RESERVE and r.clients == 1]
    r1 = min(singles, key=lambda r: r.result.pct_ms(0.99), default=None)
    if r1:
        p99 = r1.result.pct_ms(0.99)
        tab.add(
            "single-client reserve p99",
            "<= 1.5 ms",
            f"{ms(p99)} ms ({r1.workers} worker(s))",
            "yes" if p99 <= 1.5 else "no",
        )
    life = best(sl.LIFECYCLE, 50)
    if life:
        tab.add(
            "reserve+commit lifecycles/s at 50 clients",
            ">= 4,000",
            f"{num(life.result.ops_per_s)} ({life.workers} worker(s))",
            "yes" if life.result.ops_per_s >= 4000 else "no",
        )
    three = next((c for c in scopes or [] if c.scopes == 3), None)
    if three:
        tab.add(
            "Redis µs per reserve, 3 budgeted scopes (usec_per_call)",
            "<= 35 µs",
            f"{three.reserve_us:.1f} µs (commit {three.commit_us:.1f} µs)",
            "yes" if three.reserve_us <= 35 else "no",
        )
    if r50 and r50.evalsha_us is not None:
        tab.add(
            "  Redis µs per HTTP reserve at 50 clients (bench subject: 3 levels, 2 budgeted)",
            "<= 35 µs",
            f"{r50.evalsha_us:.1f} µs",
            "yes" if r50.evalsha_us <= 35 else "no",
        )
    ours = next((v for v in variants if v.name == "runcycles-core @cycles"), None)
    if ours:
        added = ours.pct_ms(0.5) - variants[0].pct_ms(0.5)
        tab.add(
            "client overhead p50 (added vs bare)",
            "<= 1 ms",
            f"{ms(added)} ms",
            "yes" if added <= 1 else "no",
        )
        plain = next((v for v in variants if v.name.startswith("plain httpx")), None)
        if plain:
            x = ours.pct_ms(0.5) / plain.pct_ms(0.5)
            tab.add(
                "client lifecycle p50 ÷ plain httpx p50 (issue 13)",
                "<= 1.25x",
                f"{x:.2f}x",
                "yes" if x <= 1.25 else "no",
            )
    return tab


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    console = Console(width=260)
    started = time.monotonic()
    env = environment(ns)
    for line in env:
        console.print(line, highlight=False)
    console.print()
    if ns.memory_only:
        tables, rows, extra = memory_tables(ns, console)
    elif ns.client_only:
        tables, rows, extra = client_tables(ns, console)
    else:
        tables, rows, extra = server_tables(ns, console)
        tables.append(client_table(extra["client"][0]))
        tables.append(memory_table(extra["memory"], extra["rss_idle"]))
        tables.append(sizing_table(extra["memory"][0]))
        tables.append(scope_cost_table(extra["scopes"]))
        tables.append(targets_table(rows, extra["client"][0], extra["scopes"]))
        tables += extra.get("profile", [])
    console.print()
    for t in tables:
        t.print(console)
    elapsed = time.monotonic() - started
    console.print(f"bench finished in {elapsed:.0f} s", highlight=False)
    if ns.markdown:
        cmd = "python3 -m nox -s bench" + (f" -- {' '.join(sys.argv[1:])}" if sys.argv[1:] else "")
        body = [f"`{cmd}` ({elapsed:.0f} s)", "", *[f"- {e}" for e in env], ""]
        body += [t.markdown() for t in tables]
        ns.markdown.write_text("\n".join(body), encoding="utf-8")
        console.print(f"markdown written to {ns.markdown}", highlight=False)
    mismatches = sum(c.identity_mismatches for _, c in extra["ledger"]) + sum(
        r.ledger.mismatches for r in rows if r.ledger is not None
    )
    if mismatches:
        console.print(f"[red]{mismatches} ledger mismatches[/red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
