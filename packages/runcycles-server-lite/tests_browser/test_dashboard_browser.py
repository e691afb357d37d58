"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromedriver``) driven by selenium against the real server on embedded Redis.

Run by ``python3 -m nox -s browser`` (not in the default run). It signs in through the login
form, reads the rendered dollar figures, funds a budget by clicking, watches the live refresh
pick up a commit made elsewhere, signs out, and saves screenshots to
``$RUNCYCLES_SCREENSHOTS`` (default ``.nox/browser-screenshots``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from runcycles_server_lite.testing import ServerHandle, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
USD = "USD_MICROCENTS"
ACTION = {"kind": "llm.completion", "name": "openai:gpt-4o"}
SHOTS = Path(os.environ.get("RUNCYCLES_SCREENSHOTS", ".nox/browser-screenshots"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with running_server(tmp_path_factory.mktemp("store")) as srv:
        yield srv


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    # An explicit driver path: selenium never looks for (or downloads) one itself.
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield drv
    finally:
        drv.quit()


class Agent:
    """A tenant's runtime client, to give the dashboard something to show."""

    def __init__(self, server: ServerHandle, tenant: str, secret: str) -> None:
        self.tenant = tenant
        self.http = httpx.Client(
            base_url=server.base_url, headers={"X-Cycles-API-Key": secret}, timeout=10
        )
        self.n = 0

    def reserve(self, estimate: int, ttl_ms: int = 60_000, **subject: str) -> str:
        self.n += 1
        r = self.http.post(
            "/v1/reservations",
            json={
                "idempotency_key": f"r{self.n}",
                "subject": {"tenant": self.tenant, **subject},
                "action": ACTION,
                "estimate": {"unit": USD, "amount": estimate},
                "ttl_ms": ttl_ms,
            },
        )
        assert r.status_code == 200, r.text
        rid: str = r.json()["reservation_id"]
        return rid

    def commit(self, rid: str, actual: int) -> None:
        self.n += 1
        r = self.http.post(
            f"/v1/reservations/{rid}/commit",
            json={"idempotency_key": f"c{self.n}", "actual": {"unit": USD, "amount": actual}},
        )
        assert r.status_code == 200, r.text


def _dollars(n: float) -> int:
    return round(n * 100_000_000)


@pytest.fixture(scope="module")
def acme(server: ServerHandle) -> Iterator[Agent]:
    """acme: $25 at the tenant, $10 prod, $2 for prod's support agent, $0.50 dev; commits on
    prod and its agent, a dev commit capped at what dev has (over limit), two live holds."""
    secret = server.provision(
        "acme",
        {
            "": _dollars(25),
            "workspace:prod": _dollars(10),
            "workspace:prod/agent:support": _dollars(2),
            "workspace:dev": _dollars(0.5),
        },
        commit_overage_policy="ALLOW_IF_AVAILABLE",
    )
    agent = Agent(server, "acme", secret)
    for estimate, actual in ((_dollars(1), _dollars(0.8)), (_dollars(2), _dollars(1.45))):
        agent.commit(agent.reserve(estimate, workspace="prod"), actual)
    agent.commit(agent.reserve(_dollars(0.5), workspace="prod", agent="support"), _dollars(0.35))
    agent.commit(agent.reserve(_dollars(0.3), workspace="dev"), _dollars(0.9))
    agent.reserve(_dollars(0.6), ttl_ms=900_000, workspace="prod", agent="support")
    agent.reserve(_dollars(0.25), ttl_ms=300_000, workspace="prod")
    server.provision("globex", {"": _dollars(5)})
    try:
        yield agent
    finally:
        agent.http.close()


def _cell(drv: WebDriver, scope: str, column: str) -> str:
    row = drv.find_element(By.CSS_SELECTOR, f'tr[data-scope="{scope}"][data-unit="{USD}"]')
    return row.find_element(By.CSS_SELECTOR, f"td.{column}").text


def _shot(drv: WebDriver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    height = drv.execute_script("return document.documentElement.scrollHeight")
    drv.set_window_size(1360, max(int(height) + 160, 600))  # + the window's own frame
    assert drv.save_screenshot(str(path))
    return path


def test_sign_in_read_fund_refresh_sign_out(
    server: ServerHandle, driver: WebDriver, acme: Agent
) -> None:
    wait = WebDriverWait(driver, 15)
    started = time.monotonic()
    driver.get(f"{server.base_url}/dashboard")
    assert driver.current_url.endswith("/dashboard/login")
    # A wrong key first: the form says so and nothing is signed in.
    driver.find_element(By.ID, "api_key").send_keys("not-the-key")
    driver.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".flash-error")))
    driver.find_element(By.ID, "api_key").send_keys(server.admin_api_key)
    driver.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.ID, "tenants")))
    listing = driver.find_element(By.ID, "tenants").text
    assert "acme" in listing and "globex" in listing
    _shot(driver, "tenants")

    driver.find_element(By.LINK_TEXT, "acme").click()
    wait.until(ec.presence_of_element_located((By.ID, "scopes")))
    root, prod, dev = "tenant:acme", "tenant:acme/workspace:prod", "tenant:acme/workspace:dev"
    # spent: 0.80 + 1.45 + 0.35 + 0.50 (dev, capped) = 3.10; held: 0.60 + 0.25 = 0.85
    assert _cell(driver, root, "allocated") == "$25.00"
    assert _cell(driver, root, "spent") == "$3.10"
    assert _cell(driver, root, "reserved") == "$0.85"
    assert _cell(driver, root, "remaining") == "$21.05"
    assert _cell(driver, prod, "remaining") == "$6.55"
    assert _cell(driver, dev, "remaining") == "$0.00"
    dev_row = driver.find_element(By.CSS_SELECTOR, f'tr[data-scope="{dev}"]')
    assert "over-limit" in (dev_row.get_attribute("class") or "")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#reservations tbody tr")) == 2
    assert driver.find_element(By.CSS_SELECTOR, ".spend-total").text == "$3.10"
    # Nothing of the key in the page's storage; the HttpOnly cookie is out of script's reach.
    stored = driver.execute_script(
        "return [localStorage.length, sessionStorage.length, document.cookie]"
    )
    assert stored == [0, 0, ""]
    assert server.admin_api_key not in driver.page_source
    _shot(driver, "tenant")

    # Fund by clicking: $5 onto the tenant's budget.
    Select(driver.find_element(By.ID, "fund-budget")).select_by_value(f"{root}|{USD}")
    Select(driver.find_element(By.ID, "fund-operation")).select_by_value("CREDIT")
    driver.find_element(By.ID, "fund-amount").send_keys("5")
    driver.find_element(By.ID, "fund-submit").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".flash-ok")))
    assert "$21.05 → $26.05" in driver.find_element(By.CSS_SELECTOR, ".flash").text
    assert _cell(driver, root, "allocated") == "$30.00"
    assert _cell(driver, root, "remaining") == "$26.05"
    _shot(driver, "funded")

    # A commit made elsewhere shows up without a reload (the live refresh).
    acme.commit(acme.reserve(_dollars(1), workspace="prod"), _dollars(1))
    wait.until(lambda d: _cell(d, root, "remaining") == "$25.05")
    assert _cell(driver, root, "spent") == "$4.10"

    driver.find_element(By.ID, "logout").click()
    wait.until(ec.presence_of_element_located((By.ID, "api_key")))
    driver.get(f"{server.base_url}/dashboard/tenants/acme")
    assert driver.current_url.endswith("/dashboard/login")
    print(f"browser flow took {time.monotonic() - started:.1f} s; screenshots in {SHOTS}")


def test_a_tenant_key_sees_only_its_tenant(
    server: ServerHandle, driver: WebDriver, acme: Agent
) -> None:
    secret = server.provision("initech", {"": _dollars(1)})
    wait = WebDriverWait(driver, 15)
    driver.delete_all_cookies()
    driver.get(f"{server.base_url}/dashboard/login")
    driver.find_element(By.ID, "api_key").send_keys(secret)
    driver.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.ID, "scopes")))
    assert driver.current_url.endswith("/dashboard/tenants/initech")
    assert _cell(driver, "tenant:initech", "remaining") == "$1.00"
    assert not driver.find_elements(By.ID, "freeze-form")  # freezing needs the admin key
    driver.get(f"{server.base_url}/dashboard/tenants/acme")
    assert "only see its own tenant" in driver.find_element(By.TAG_NAME, "main").text
