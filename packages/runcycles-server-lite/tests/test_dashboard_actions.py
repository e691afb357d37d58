"""The dashboard's write actions over real HTTP: fund, freeze, logout, and the CSRF defences."""

from __future__ import annotations

import httpx
import pytest
from dashboard_support import browser, client, hidden, scope_rows, sign_in
from runtime_support import Tenant, TenantFactory, mk

from runcycles_server_lite.testing import ServerHandle

__all__ = ["client", "mk"]

USD = "USD_MICROCENTS"


@pytest.fixture
def acme(mk: TenantFactory) -> Tenant:
    return mk({"": 500_000_000, "workspace:prod": 200_000_000}, prefix="dash")


def _page(client: httpx.Client, tenant: str) -> str:
    r = client.get(f"/dashboard/tenants/{tenant}")
    assert r.status_code == 200, r.text
    return r.text


def _fund(
    client: httpx.Client, t: Tenant, amount: str, *, scope: str = "", **fields: str
) -> httpx.Response:
    page = _page(client, t.name)
    form = {
        "csrf": hidden(page, "csrf"),
        "form_key": hidden(page, "form_key"),
        "budget": f"tenant:{t.name}{scope}|{USD}",
        "operation": "CREDIT",
        "amount": amount,
        **fields,
    }
    return client.post(f"/dashboard/tenants/{t.name}/fund", data=form)


def _allocated(t: Tenant, scope: str = "") -> int:
    return int(t.ledger()[f"tenant:{t.name}{scope}|{USD}"]["allocated"])


def _audit(server: ServerHandle, operation: str, scope: str) -> list[dict[str, object]]:
    with server.admin_client() as admin:
        logs = admin.get("/v1/admin/audit/logs", params={"operation": operation}).json()["logs"]
    return [e for e in logs if e.get("resource_id") == scope]


def test_fund_credits_the_ledger_through_the_admin_operation(
    server: ServerHandle, client: httpx.Client, acme: Tenant
) -> None:
    sign_in(client, server.admin_api_key)
    r = _fund(client, acme, "1.50")
    assert r.status_code == 303 and r.headers["location"] == f"/dashboard/tenants/{acme.name}"
    assert _allocated(acme) == 650_000_000
    page = _page(client, acme.name)
    row = scope_rows(page)[(f"tenant:{acme.name}", USD)]
    assert (row.cells["allocated"], row.cells["remaining"]) == ("$6.50", "$6.50")
    assert "remaining $5.00 → $6.50" in page  # the flash, shown once
    assert "remaining $5.00 → $6.50" not in _page(client, acme.name)
    # The same audit entry and event as POST /v1/admin/budgets/fund.
    (entry,) = _audit(server, "fundBudget", f"tenant:{acme.name}")
    assert entry["tenant_id"] == "__admin__" and entry["status"] == 200
    with server.admin_client() as admin:
        events = admin.get(
            "/v1/admin/events", params={"tenant_id": acme.name, "event_type": "budget.funded"}
        ).json()["events"]
    assert len(events) == 1 and events[0]["actor"]["type"] == "admin"
    # Other operations and a dollar sign work too; a bad amount is flashed, nothing changes.
    _fund(client, acme, "$0.50", operation="DEBIT", scope="/workspace:prod")
    assert _allocated(acme, "/workspace:prod") == 150_000_000
    bad = _fund(client, acme, "lots")
    assert bad.status_code == 303
    assert "INVALID_REQUEST" in _page(client, acme.name)
    assert _allocated(acme) == 650_000_000


def test_a_double_submit_funds_once(
    server: ServerHandle, client: httpx.Client, acme: Tenant
) -> None:
    sign_in(client, server.admin_api_key)
    page = _page(client, acme.name)
    form = {
        "csrf": hidden(page, "csrf"),
        "form_key": hidden(page, "form_key"),
        "budget": f"tenant:{acme.name}|{USD}",
        "operation": "CREDIT",
        "amount": "1",
    }
    for _ in range(2):
        assert client.post(f"/dashboard/tenants/{acme.name}/fund", data=form).status_code == 303
    assert _allocated(acme) == 600_000_000


def test_writes_without_the_csrf_token_or_from_elsewhere_are_refused(
    server: ServerHandle, client: httpx.Client, acme: Tenant
) -> None:
    sign_in(client, server.admin_api_key)
    token = hidden(_page(client, acme.name), "csrf")
    budget = f"tenant:{acme.name}|{USD}"
    url = f"/dashboard/tenants/{acme.name}"
    attempts: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("/fund", {"budget": budget, "amount": "5"}, {}),
        ("/fund", {"budget": budget, "amount": "5", "csrf": "wrong"}, {}),
        (
            "/fund",
            {"budget": budget, "amount": "5", "csrf": token},
            {"Origin": "https://evil.example"},
        ),
        ("/freeze", {"budget": budget}, {}),
        ("/freeze", {"budget": budget, "csrf": token}, {"Origin": "null"}),
    ]
    for path, form, headers in attempts:
        r = client.post(url + path, data=form, headers=headers)
        assert r.status_code == 403, (path, form, headers)
        assert "Refused" in r.text
    # Neither Origin nor Referer: refused as well (browsers always send one on POST).
    del client.headers["Origin"]
    r = client.post(url + "/fund", data={"budget": budget, "amount": "5", "csrf": token})
    assert r.status_code == 403
    ok = client.post(
        url + "/fund",
        data={"budget": budget, "amount": "5", "csrf": token},
        headers={"Referer": f"{server.base_url}{url}"},
    )
    assert ok.status_code == 303
    assert _allocated(acme) == 1_000_000_000  # only the last one went through
    assert acme.ledger()[budget]["status"] == "ACTIVE"
    # An oversized form is refused before it is read whole.
    huge = {"budget": budget, "amount": "5", "csrf": token, "pad": "x" * 20_000}
    assert (
        client.post(
            url + "/fund", data=huge, headers={"Referer": server.base_url + url}
        ).status_code
        == 413
    )
    assert _allocated(acme) == 1_000_000_000
    # Only POST: a GET to an action is not a write.
    assert client.get(url + "/fund").status_code == 405


def test_freeze_and_unfreeze(server: ServerHandle, client: httpx.Client, acme: Tenant) -> None:
    sign_in(client, server.admin_api_key)
    token = hidden(_page(client, acme.name), "csrf")
    budget = f"tenant:{acme.name}/workspace:prod|{USD}"
    url = f"/dashboard/tenants/{acme.name}"
    assert client.post(url + "/freeze", data={"budget": budget, "csrf": token}).status_code == 303
    assert acme.ledger()[budget]["status"] == "FROZEN"
    row = scope_rows(_page(client, acme.name))[tuple(budget.split("|"))]  # type: ignore[index]
    assert "frozen" in row.classes
    # A frozen budget refuses reservations, as after POST /v1/admin/budgets/freeze.
    assert acme.reserve(1, subject=acme.subject(workspace="prod")).status_code == 409
    (entry,) = _audit(server, "freezeBudget", budget.split("|")[0])
    assert entry["tenant_id"] == "__admin__"
    assert client.post(url + "/unfreeze", data={"budget": budget, "csrf": token}).status_code == 303
    assert acme.ledger()[budget]["status"] == "ACTIVE"


def test_tenant_keys_follow_the_admin_api_rules(
    server: ServerHandle, client: httpx.Client, acme: Tenant, mk: TenantFactory
) -> None:
    other = mk({"": 100_000_000}, prefix="dash")
    sign_in(client, acme.secret)  # default permissions: budgets:write, no admin
    page = _page(client, acme.name)
    assert 'id="fund-form"' in page and 'id="freeze-form"' not in page
    assert _fund(client, acme, "1").status_code == 303
    assert _allocated(acme) == 600_000_000
    token = hidden(page, "csrf")
    budget = f"tenant:{acme.name}|{USD}"
    client.post(f"/dashboard/tenants/{acme.name}/freeze", data={"budget": budget, "csrf": token})
    assert "FORBIDDEN" in _page(client, acme.name)
    assert acme.ledger()[budget]["status"] == "ACTIVE"
    # Another tenant's budgets: refused, whatever the form says.
    foreign = {"budget": f"tenant:{other.name}|{USD}", "amount": "1", "csrf": token}
    assert client.post(f"/dashboard/tenants/{other.name}/fund", data=foreign).status_code == 403
    assert _allocated(other) == 100_000_000
    mine_url = f"/dashboard/tenants/{acme.name}/fund"
    client.post(mine_url, data=foreign)
    assert _allocated(other) == 100_000_000
    # A read-only key sees the page without the actions and cannot fund.
    reader = mk({"": 100}, prefix="dash", permissions=["budgets:read"])
    with browser(server) as c:
        sign_in(c, reader.secret)
        page = _page(c, reader.name)
        assert 'id="fund-form"' not in page
        assert "reservations:list" in page  # the reservations section says what it needs
        form = {
            "budget": f"tenant:{reader.name}|{USD}",
            "amount": "1",
            "csrf": hidden(page, "csrf"),
        }
        c.post(f"/dashboard/tenants/{reader.name}/fund", data=form)
        assert "FORBIDDEN" in _page(c, reader.name)
        assert _allocated(reader) == 100


def test_scripts_fund_with_the_admin_header(server: ServerHandle, acme: Tenant) -> None:
    with httpx.Client(base_url=server.base_url, headers=server.admin_headers, timeout=10) as c:
        form = {"budget": f"tenant:{acme.name}|{USD}", "amount": "2"}
        r = c.post(f"/dashboard/tenants/{acme.name}/fund", data=form)
        assert r.status_code == 200, r.text
        assert r.json()["new_allocated"] == {"unit": USD, "amount": 700_000_000}
        # The API's error envelope for a failure, and a foreign Origin is refused.
        bad = c.post(f"/dashboard/tenants/{acme.name}/fund", data={**form, "amount": "x"})
        assert bad.status_code == 400 and bad.json()["error"] == "INVALID_REQUEST"
        evil = c.post(
            f"/dashboard/tenants/{acme.name}/fund",
            data=form,
            headers={"Origin": "https://evil.example"},
        )
        assert evil.status_code == 403
    assert _allocated(acme) == 700_000_000


def test_logout_ends_the_session(server: ServerHandle, client: httpx.Client, acme: Tenant) -> None:
    sign_in(client, server.admin_api_key)
    stolen = client.cookies["rc_dashboard"]
    page = _page(client, acme.name)
    assert client.post("/dashboard/logout", data={}).status_code == 403  # no token
    r = client.post("/dashboard/logout", data={"csrf": hidden(page, "csrf")})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert 'rc_dashboard=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert client.get("/dashboard").status_code == 303
    # The old cookie value is dead on the server too, not only forgotten by the browser.
    with httpx.Client(base_url=server.base_url, cookies={"rc_dashboard": stolen}) as c:
        assert c.get("/dashboard").status_code == 303
