"""The CLI's admin subcommands: thin calls to a running server's admin HTTP API.

They speak only the public admin API (never Redis), so they work against any server that
implements it, including the reference one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from runcycles_core.amounts import MONEY_UNIT, format_amount, parse_amount

from .config import ADMIN_KEY_FILE, DEFAULT_URL, Settings


class CommandError(Exception):
    """A failure to report on stderr (exit status 1)."""


def admin_key(ns: argparse.Namespace) -> str:
    """--admin-key, else ADMIN_API_KEY, else the key the embedded server generated."""
    if ns.admin_key:
        return str(ns.admin_key)
    if os.environ.get("ADMIN_API_KEY"):
        return os.environ["ADMIN_API_KEY"]
    data_dir: Path = ns.data_dir or Settings.from_env().data_dir
    path = data_dir / ADMIN_KEY_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise CommandError(
            f"no admin key: pass --admin-key, set ADMIN_API_KEY, or run the server once "
            f"so it writes {path}"
        ) from None


def server_url(ns: argparse.Namespace) -> str:
    """--url, else RUNCYCLES_URL, else the local default."""
    url: str = ns.url or os.environ.get("RUNCYCLES_URL") or DEFAULT_URL
    return url.rstrip("/")


def wait_for_server(url: str, seconds: float) -> None:
    """Return once anything answers HTTP at ``url``, polling for up to ``seconds``.

    Right after ``runcycles-server-lite &`` the server is still starting (and has not yet
    written the admin key it generates); waiting here turns that race into a short pause.
    Only transport errors (refused, reset, timed out) mean "not up yet": any HTTP answer,
    even an error status, means a server is there to report it properly.
    """
    if seconds <= 0:
        return
    started = time.monotonic()
    deadline = started + seconds
    told = False
    while True:
        try:
            httpx.get(f"{url}/actuator/health", timeout=min(5.0, seconds))
            return
        except httpx.TransportError as exc:
            last = exc
        now = time.monotonic()
        if now >= deadline:
            raise CommandError(
                f"no server answered at {url} within {seconds:g} s ({last}); start one with "
                "`runcycles-server-lite`, point --url (or RUNCYCLES_URL) at yours, or wait "
                "longer with --wait SECONDS"
            )
        if not told and now - started >= 1:
            print(f"waiting up to {seconds:g} s for the server at {url} ...", file=sys.stderr)
            told = True
        time.sleep(0.1)


def client(ns: argparse.Namespace, url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-Admin-API-Key": admin_key(ns)}, timeout=30)


def _check(r: httpx.Response, *ok: int) -> Any:
    if r.status_code in ok:
        return r.json()
    try:
        body = r.json()
        detail = f"{body.get('error')}: {body.get('message')}"
    except ValueError:
        detail = r.text[:200]
    raise CommandError(f"{r.request.method} {r.request.url.path} -> {r.status_code} {detail}")


def tenant_create(http: httpx.Client, ns: argparse.Namespace, out: Console) -> None:
    body = {"tenant_id": ns.tenant_id, "name": ns.name or ns.tenant_id}
    r = http.post("/v1/admin/tenants", json=body)
    tenant = _check(r, 200, 201)
    verb = "created" if r.status_code == 201 else "exists:"
    out.print(f"{verb} tenant {tenant['tenant_id']} ({tenant['status']})")


def key_create(http: httpx.Client, ns: argparse.Namespace, out: Console) -> None:
    from .auth import KEY_PROFILES

    body: dict[str, Any] = {"tenant_id": ns.tenant_id, "name": ns.name}
    body["permissions"] = ns.permission or list(KEY_PROFILES[ns.profile])
    key = _check(http.post("/v1/admin/api-keys", json=body), 201)
    # The secret alone on stdout (so `KEY=$(runcycles-server-lite key create t)` works);
    # the rest on stderr.
    print(key["key_secret"])
    Console(stderr=True).print(
        f"key {key['key_id']} for {key['tenant_id']} (expires {key['expires_at']}); "
        "the secret is shown only once"
    )


def _allocation(ns: argparse.Namespace) -> int:
    """``budget set``'s AMOUNT in the budget's unit: ``$1.50`` / ``1.50 USD`` or an integer."""
    try:
        amount = parse_amount(str(ns.amount), ns.unit)
    except ValueError as exc:
        hint = ""
        if str(ns.amount).startswith("."):
            # `budget set x $1.50` unquoted: the shell expanded "$1" and left ".50".
            hint = " (quote dollar amounts for the shell: '$1.50', or write 1.50 USD)"
        raise CommandError(f"{exc}{hint}") from None
    if amount < 0:
        raise CommandError(f"{ns.amount!r}: an allocation cannot be negative")
    return amount


def _dollars(amount: int, unit: str) -> str:
    """`` ($1.50)`` after a raw money amount; nothing for other units."""
    return f" ({format_amount(amount, unit)})" if unit == MONEY_UNIT else ""


def budget_set(http: httpx.Client, ns: argparse.Namespace, out: Console) -> None:
    amount = _allocation(ns)
    scope: str = ns.scope.strip()
    tenant = ns.tenant
    if not scope.lower().startswith("tenant:"):
        if not tenant:
            raise CommandError("give a scope starting with tenant:<id>, or --tenant")
        scope = f"tenant:{tenant}/{scope}" if scope else f"tenant:{tenant}"
    tenant = tenant or scope.split("/")[0].partition(":")[2].lower()
    r = http.get("/v1/admin/budgets/lookup", params={"scope": scope, "unit": ns.unit})
    if r.status_code == 404:
        body = {
            "tenant_id": tenant,
            "scope": scope,
            "unit": ns.unit,
            "allocated": {"unit": ns.unit, "amount": amount},
        }
        b = _check(http.post("/v1/admin/budgets", json=body), 201)
        out.print(
            f"created {b['scope']} {ns.unit}: allocated {amount:,}{_dollars(amount, ns.unit)}"
        )
        return
    _check(r, 200)
    res = _check(
        http.post(
            "/v1/admin/budgets/fund",
            params={"tenant_id": tenant, "scope": scope, "unit": ns.unit},
            json={"operation": "RESET", "amount": {"unit": ns.unit, "amount": amount}},
        ),
        200,
    )
    new, left = res["new_allocated"]["amount"], res["new_remaining"]["amount"]
    out.print(
        f"reset {scope} {ns.unit}: allocated {res['previous_allocated']['amount']:,} -> "
        f"{new:,}{_dollars(new, ns.unit)}, remaining {left:,}{_dollars(left, ns.unit)}"
    )


def _ledgers(http: httpx.Client, tenant: str) -> Iterator[dict[str, Any]]:
    params: dict[str, Any] = {"tenant_id": tenant, "limit": 100}
    while True:
        page = _check(http.get("/v1/admin/budgets", params=params), 200)
        yield from page["ledgers"]
        if not page.get("has_more"):
            return
        params["cursor"] = page["next_cursor"]


def balances(http: httpx.Client, ns: argparse.Namespace, out: Console) -> None:
    _check(http.get(f"/v1/admin/tenants/{ns.tenant_id}"), 200)
    table = Table(title=f"Budgets of {ns.tenant_id}")
    table.add_column("scope", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    for name in ("allocated", "remaining", "remaining $", "reserved", "spent", "debt"):
        table.add_column(name, justify="right")
    table.add_column("over-limit")
    table.add_column("status")
    for b in _ledgers(http, ns.tenant_id):
        raw = {f: b[f]["amount"] for f in ("allocated", "remaining", "reserved", "spent", "debt")}
        # Dollars beside the raw units for money budgets; other units have no dollar value.
        money = format_amount(raw["remaining"], b["unit"]) if b["unit"] == MONEY_UNIT else ""
        table.add_row(
            b["scope"],
            b["unit"],
            f"{raw['allocated']:,}",
            f"{raw['remaining']:,}",
            money,
            *(f"{raw[f]:,}" for f in ("reserved", "spent", "debt")),
            "yes" if b["is_over_limit"] else "no",
            b["status"],
        )
    out.print(table)


COMMANDS = {
    ("tenant", "create"): tenant_create,
    ("key", "create"): key_create,
    ("budget", "set"): budget_set,
    ("balances", None): balances,
}


def run_command(ns: argparse.Namespace) -> int:
    """Run an admin subcommand; 0 on success, 1 with a message on stderr otherwise."""
    fn = COMMANDS[(ns.command, getattr(ns, "action", None))]
    # Piped output has no terminal width; keep table rows whole for grep and scripts.
    probe = Console()
    out = Console(width=probe.width if probe.is_terminal else 200)
    url = server_url(ns)
    try:
        wait_for_server(url, ns.wait)
        with client(ns, url) as http:
            fn(http, ns, out)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the server: {exc}", file=sys.stderr)
        return 1
    return 0
