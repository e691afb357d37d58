"""The dashboard over real HTTP: sign-in, tenant isolation, the figures, script access."""

from __future__ import annotations

import re
import uuid
from importlib import resources

import httpx
import pytest
from dashboard_support import (
    browser,
    clear_login_failures,
    client,
    hidden,
    scope_rows,
    sign_in,
)
from runtime_support import Tenant, TenantFactory, mk

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle

__all__ = ["client", "mk"]

USD = "USD_MICROCENTS"


@pytest.fixture
def shop(mk: TenantFactory) -> Tenant:
    """$10 at the tenant, $3 for prod, $0.10 for dev; a $0.25 commit and a $0.40 hold on
    prod; a dev commit that asks for $0.20 and is capped at the $0.10 dev has (over limit);
    1,200 TOKENS on the tenant."""
    t = mk(
        {"": 1_000_000_000, "workspace:prod": 300_000_000, "workspace:dev": 10_000_000},
        prefix="dash",
        commit_overage_policy="ALLOW_IF_AVAILABLE",
    )
    prod = t.subject(workspace="prod")
    rid = t.reserve_ok(50_000_000, subject=prod)
    assert t.commit(rid, 25_000_000).status_code == 200
    t.reserve_ok(40_000_000, subject=prod, ttl_ms=600_000)
    dev = t.reserve_ok(5_000_000, subject=t.subject(workspace="dev"))
    assert t.commit(dev, 20_000_000).status_code == 200

    async def tokens(store: Store) -> None:
        await prov.create_budget(store, t.name, f"tenant:{t.name}", "TOKENS", 1200)

    t.server.run_store(tokens)
    return t


def test_signed_out_browser_goes_to_the_login_form(client: httpx.Client) -> None:
    r = client.get("/dashboard")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    form = client.get("/dashboard/login")
    assert form.status_code == 200
    assert 'name="api_key"' in form.text and 'type="password"' in form.text
    assert client.get("/dashboard/tenants/anything/live").status_code == 401


def test_admin_key_signs_in_and_sees_every_tenant(
    server: ServerHandle, client: httpx.Client, mk: TenantFactory
) -> None:
    a, b = mk({"": 100}, prefix="dash"), mk({"": 100}, prefix="dash")
    r = sign_in(client, server.admin_api_key)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("rc_dashboard=")
    attrs = {p.strip().lower() for p in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/dashboard"} <= attrs
    assert "secure" not in attrs  # served over plain http here
    assert not any(a.startswith(("max-age", "expires")) for a in attrs)  # a session cookie
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert f'href="/dashboard/tenants/{a.name}"' in page.text
    assert f'href="/dashboard/tenants/{b.name}"' in page.text
    assert "Signed in as <strong>admin</strong>" in page.text
    assert client.get(f"/dashboard/tenants/{a.name}").status_code == 200
    assert client.get("/dashboard/tenants/no-such-tenant").status_code == 404


def test_wrong_key_is_rejected(server: ServerHandle, client: httpx.Client) -> None:
    for key in ("not-a-key", server.admin_api_key + "x", "cyc_live_" + "A" * 32, ""):
        r = sign_in(client, key)
        assert r.status_code == 401, key
        assert "set-cookie" not in r.headers
        assert "flash-error" in r.text
    assert client.get("/dashboard").status_code == 303


def test_repeated_failed_sign_ins_are_throttled(server: ServerHandle, client: httpx.Client) -> None:
    from runcycles_server_lite.dashboard.throttle import LIMIT

    for _ in range(3):
        assert sign_in(client, "cyc_live_" + uuid.uuid4().hex).status_code == 401
    assert sign_in(client, server.admin_api_key).status_code == 303  # clears the count
    client.cookies.clear()
    for _ in range(LIMIT):
        assert sign_in(client, "cyc_live_" + uuid.uuid4().hex).status_code == 401
    blocked = sign_in(client, server.admin_api_key)  # even the right key now waits
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= 300
    assert "Too many failed sign-ins" in blocked.text
    assert "set-cookie" not in blocked.headers
    # Scripts sending the key in a header are not throttled by the form's counter.
    assert (
        client.get("/dashboard", headers={"X-Admin-API-Key": server.admin_api_key}).status_code
        == 200
    )
    clear_login_failures(server)
    assert sign_in(client, server.admin_api_key).status_code == 303


def test_a_failed_sign_in_is_an_auth_failure_event(
    server: ServerHandle, client: httpx.Client
) -> None:
    r = sign_in(client, "cyc_live_" + uuid.uuid4().hex)
    assert r.status_code == 401
    with server.admin_client() as admin:
        events = admin.get(
            "/v1/admin/events",
            params={"tenant_id": "__system__", "event_type": "api_key.auth_failed", "limit": 100},
        ).json()["events"]
    mine = [e for e in events if e.get("request_id") == r.headers["x-request-id"]]
    assert [e["data"]["failure_reason"] for e in mine] == ["key_not_found"]


def test_a_session_ends_after_its_lifetime(
    server: ServerHandle, client: httpx.Client, mk: TenantFactory
) -> None:
    t = mk({"": 100}, prefix="dash")
    sign_in(client, t.secret)
    assert client.get("/dashboard").status_code == 200

    async def age(store: Store) -> None:
        for name in await store.redis.keys(f"{store.keys.prefix}:dashboard:session:*"):
            if await store.redis.hget(name, "tenant") == t.name:
                await store.redis.hset(name, "created_at", "0")

    server.run_store(age)
    assert client.get("/dashboard").status_code == 303


def test_a_forged_or_unknown_cookie_is_no_session(
    server: ServerHandle, client: httpx.Client
) -> None:
    sign_in(client, server.admin_api_key)
    value = client.cookies["rc_dashboard"]
    sid, _, mac = value.partition(".")
    for forged in (f"{sid}.{'0' * len(mac)}", f"x{sid}.{mac}", sid, "garbage"):
        with httpx.Client(base_url=server.base_url, cookies={"rc_dashboard": forged}) as c:
            assert c.get("/dashboard").status_code == 303, forged


def test_tenant_key_sees_only_its_own_tenant(
    server: ServerHandle, client: httpx.Client, mk: TenantFactory
) -> None:
    mine, other = mk({"": 100}, prefix="dash"), mk({"": 100}, prefix="dash")
    r = sign_in(client, mine.secret)
    assert r.status_code == 303 and r.headers["location"] == f"/dashboard/tenants/{mine.name}"
    listing = client.get("/dashboard")
    assert f"/dashboard/tenants/{mine.name}" in listing.text
    assert other.name not in listing.text
    assert client.get(f"/dashboard/tenants/{mine.name}").status_code == 200
    for path in ("", "/live"):
        refused = client.get(f"/dashboard/tenants/{other.name}{path}")
        assert refused.status_code == 403
        assert other.name not in refused.text.split("<main>")[1]
    # Nor through the JSON view, nor by posting to the other tenant's actions.
    assert (
        client.get(
            f"/dashboard/tenants/{other.name}", headers={"Accept": "application/json"}
        ).status_code
        == 403
    )


def test_a_key_without_read_permission_cannot_sign_in(
    client: httpx.Client, mk: TenantFactory
) -> None:
    t = mk({"": 100}, prefix="dash", permissions=["reservations:create"])
    r = sign_in(client, t.secret)
    assert r.status_code == 401 and "budgets:read" in r.text
    assert "set-cookie" not in r.headers


def test_revoking_the_key_ends_its_session(
    server: ServerHandle, client: httpx.Client, mk: TenantFactory
) -> None:
    t = mk({"": 100}, prefix="dash")
    sign_in(client, t.secret)
    assert client.get(f"/dashboard/tenants/{t.name}").status_code == 200

    with server.admin_client() as admin:
        (key,) = admin.get("/v1/admin/api-keys", params={"tenant_id": t.name}).json()["keys"]
        assert admin.delete(f"/v1/admin/api-keys/{key['key_id']}").status_code == 200
    r = client.get(f"/dashboard/tenants/{t.name}")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    # The session is gone for good, not just refused once.
    assert client.get("/dashboard/login").status_code == 200


def test_dollar_figures_of_a_provisioned_tenant(client: httpx.Client, shop: Tenant) -> None:
    sign_in(client, shop.secret)
    page = client.get(f"/dashboard/tenants/{shop.name}")
    assert page.status_code == 200
    rows = scope_rows(page.text)
    root, prod, dev = (
        f"tenant:{shop.name}",
        f"tenant:{shop.name}/workspace:prod",
        f"tenant:{shop.name}/workspace:dev",
    )
    figures = {
        scope: tuple(
            rows[(scope, USD)].cells[c]
            for c in ("allocated", "reserved", "spent", "remaining", "debt")
        )
        for scope in (root, prod, dev)
    }
    assert figures[root] == ("$10.00", "$0.40", "$0.35", "$9.25", "$0.00")
    assert figures[prod] == ("$3.00", "$0.40", "$0.25", "$2.35", "$0.00")
    assert figures[dev] == ("$0.10", "$0.00", "$0.10", "$0.00", "$0.00")
    # The same figures the admin API reports, in dollars.
    ledger = shop.ledger()
    assert ledger[f"{root}|{USD}"]["remaining"] == 925_000_000
    # Utilisation is (spent + reserved) / allocated.
    assert rows[(prod, USD)].cells["util"] == "22%"
    assert rows[(dev, USD)].cells["util"] == "100%"
    # Other units raw, not as dollars.
    tokens = rows[(root, "TOKENS")].cells
    assert (tokens["allocated"], tokens["remaining"]) == ("1,200", "1,200")
    # Tree order: the tenant before its workspaces, children indented.
    order = [scope for scope, unit in rows if unit == USD]
    assert order == [root, dev, prod]
    assert 'class="scope depth-1"' in page.text
    # Spend over time: both commits ($0.25 + $0.10) in the default window.
    assert re.search(r'class="spend-total">\$0\.35<', page.text), page.text
    # The live fragment carries the same table.
    live = client.get(f"/dashboard/tenants/{shop.name}/live")
    assert live.status_code == 200 and "<html" not in live.text
    assert scope_rows(live.text)[(root, USD)].cells["remaining"] == "$9.25"


def test_active_reservations_show_their_ttl(client: httpx.Client, shop: Tenant) -> None:
    sign_in(client, shop.secret)
    page = client.get(f"/dashboard/tenants/{shop.name}")
    held = re.findall(
        r'<td class="num">(\$[\d.]+)</td>\s*<td class="num ttl" data-ttl-ms="(\d+)">([^<]+)<',
        page.text,
    )
    assert len(held) == 1, page.text
    amount, ttl_ms, shown = held[0]
    assert amount == "$0.40"
    assert 590_000 < int(ttl_ms) <= 600_000
    assert shown.startswith("9m ")


def test_over_limit_and_debt_are_highlighted(
    server: ServerHandle, client: httpx.Client, shop: Tenant, mk: TenantFactory
) -> None:
    sign_in(client, server.admin_api_key)
    rows = scope_rows(client.get(f"/dashboard/tenants/{shop.name}").text)
    dev = rows[(f"tenant:{shop.name}/workspace:dev", USD)]
    assert "over-limit" in dev.classes and "over limit" in dev.cells["flags"]
    assert "over-limit" not in rows[(f"tenant:{shop.name}", USD)].classes

    owing = mk(
        {"": 50_000_000},
        prefix="dash",
        overdraft_limit=100_000_000,
        commit_overage_policy="ALLOW_WITH_OVERDRAFT",
    )
    rid = owing.reserve_ok(50_000_000, overage_policy="ALLOW_WITH_OVERDRAFT")
    assert owing.commit(rid, 80_000_000).status_code == 200
    row = scope_rows(client.get(f"/dashboard/tenants/{owing.name}").text)[
        (f"tenant:{owing.name}", USD)
    ]
    assert "in-debt" in row.classes and "over-limit" not in row.classes
    assert row.cells["debt"] == "$0.30" and "debt" in row.cells["flags"]
    listing = client.get("/dashboard").text
    assert re.search(
        rf'<tr class="over-limit">\s*<td><a href="/dashboard/tenants/{shop.name}"', listing
    )
    assert re.search(
        rf'<tr class="in-debt">\s*<td><a href="/dashboard/tenants/{owing.name}"', listing
    )


def test_scripts_use_the_api_headers(server: ServerHandle, shop: Tenant, mk: TenantFactory) -> None:
    other = mk({"": 100}, prefix="dash")
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        admin = {"X-Admin-API-Key": server.admin_api_key}
        assert c.get("/dashboard", headers=admin).status_code == 200
        body = c.get(
            f"/dashboard/tenants/{shop.name}", headers={**admin, "Accept": "application/json"}
        ).json()
        root = next(b for b in body["budgets"] if b["depth"] == 0 and b["unit"] == USD)
        assert (root["remaining"], root["reserved"]) == (925_000_000, 40_000_000)
        assert body["spend"]["series"][0]["total"] == 35_000_000
        tenant = {"X-Cycles-API-Key": shop.secret, "Accept": "application/json"}
        assert c.get(f"/dashboard/tenants/{shop.name}", headers=tenant).status_code == 200
        assert c.get(f"/dashboard/tenants/{other.name}", headers=tenant).status_code == 403
        listed = c.get("/dashboard", headers=tenant).json()["tenants"]
        assert [t["tenant_id"] for t in listed] == [shop.name]
        # A wrong header key is the API's 401, never a fall-through to the login form.
        bad = c.get("/dashboard", headers={"X-Admin-API-Key": "wrong"})
        assert bad.status_code == 401 and bad.json()["error"] == "UNAUTHORIZED"


def test_no_key_reaches_the_page_or_its_assets(
    server: ServerHandle, client: httpx.Client, shop: Tenant
) -> None:
    for key in (server.admin_api_key, shop.secret):
        with browser(server) as c:
            r = sign_in(c, key)
            assert key not in r.headers["set-cookie"]
            texts = [
                c.get("/dashboard").text,
                c.get(f"/dashboard/tenants/{shop.name}").text,
                c.get(f"/dashboard/tenants/{shop.name}/live").text,
            ]
            for text in texts:
                assert key not in text
                assert key[:14] not in text  # not even the key's prefix
    js = client.get("/dashboard/static/dashboard.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    for word in ("localStorage", "sessionStorage", "document.cookie", "http://", "https://"):
        assert word not in js.text
    css = client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and "http" not in css.text
    page = client.get("/dashboard/login")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"(https?:)?//", page.text)


def test_templates_and_assets_are_package_data() -> None:
    root = resources.files("runcycles_server_lite.dashboard")
    for name in ("base.html", "login.html", "tenants.html", "tenant.html", "_live.html"):
        assert (root / "templates" / name).is_file(), name
    for name in ("dashboard.css", "dashboard.js"):
        assert (root / "static" / name).is_file(), name


def test_login_form_has_the_hidden_fields_it_needs(
    server: ServerHandle, client: httpx.Client, shop: Tenant
) -> None:
    sign_in(client, server.admin_api_key)
    page = client.get(f"/dashboard/tenants/{shop.name}").text
    token = hidden(page, "csrf")
    assert len(token) >= 32 and token in page
    assert 'id="fund-form"' in page and 'id="freeze-form"' in page
