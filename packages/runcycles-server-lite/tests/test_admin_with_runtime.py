"""Admin operations against ledgers the runtime is using: real reservations, commits with
overdraft, frozen budgets and suspended tenants, all through the public HTTP APIs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from runcycles_server_lite.testing import ServerHandle

UNIT = "USD_MICROCENTS"
ACTION = {"kind": "llm.completion", "name": "openai:gpt-4o"}
FIELDS = ("allocated", "remaining", "reserved", "spent", "debt")


def amt(n: int) -> dict[str, Any]:
    return {"unit": UNIT, "amount": n}


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


@pytest.fixture
def setup(server: ServerHandle, admin: httpx.Client) -> Iterator[Callable[..., Setup]]:
    made: list[Setup] = []

    def make(**budget: Any) -> Setup:
        made.append(Setup(server, admin, **budget))
        return made[-1]

    yield make
    for s in made:
        s.http.close()


class Setup:
    """A tenant provisioned through the admin API, with a key and two nested budgets."""

    def __init__(self, server: ServerHandle, admin: httpx.Client, **budget: Any) -> None:
        self.t = f"w-{uuid.uuid4().hex[:12]}"
        self.admin = admin
        assert admin.post("/v1/admin/tenants", json={"tenant_id": self.t, "name": "w"}).is_success
        key = admin.post("/v1/admin/api-keys", json={"tenant_id": self.t, "name": "rt"}).json()
        self.http = httpx.Client(
            base_url=server.base_url, headers={"X-Cycles-API-Key": key["key_secret"]}, timeout=10
        )
        self.root = f"tenant:{self.t}"
        self.leaf = f"tenant:{self.t}/workspace:w"
        for scope, allocated in ((self.root, 10_000), (self.leaf, 1_000)):
            body = {"scope": scope, "unit": UNIT, "allocated": amt(allocated), **budget}
            # Budgets created with the tenant's own key (budgets:write is a default).
            r = self.http.post("/v1/admin/budgets", json=body)
            assert r.status_code == 201, r.text

    def reserve(self, estimate: int, **extra: Any) -> httpx.Response:
        return self.http.post(
            "/v1/reservations",
            json={
                "idempotency_key": uuid.uuid4().hex,
                "subject": {"tenant": self.t, "workspace": "w"},
                "action": ACTION,
                "estimate": amt(estimate),
                **extra,
            },
        )

    def commit(self, rid: str, actual: int) -> httpx.Response:
        return self.http.post(
            f"/v1/reservations/{rid}/commit",
            json={"idempotency_key": uuid.uuid4().hex, "actual": amt(actual)},
        )

    def fund(self, scope: str, op: str, amount: int) -> httpx.Response:
        return self.admin.post(
            "/v1/admin/budgets/fund",
            params={"tenant_id": self.t, "scope": scope, "unit": UNIT},
            json={"operation": op, "amount": amt(amount)},
        )

    def ledger(self, scope: str) -> dict[str, Any]:
        r = self.admin.get("/v1/admin/budgets/lookup", params={"scope": scope, "unit": UNIT})
        assert r.status_code == 200, r.text
        b: dict[str, Any] = r.json()
        values = {f: b[f]["amount"] for f in FIELDS}
        assert values["allocated"] == (
            values["remaining"] + values["spent"] + values["reserved"] + values["debt"]
        ), b
        return {**values, "is_over_limit": b["is_over_limit"], "status": b["status"]}


def test_funding_with_live_reservations_keeps_the_identity(
    setup: Callable[..., Setup],
) -> None:
    s = setup()
    r = s.reserve(600)
    assert r.status_code == 200, r.text
    rid = r.json()["reservation_id"]
    assert s.ledger(s.leaf)["reserved"] == 600
    # Only the unreserved 400 can be debited.
    assert s.fund(s.leaf, "DEBIT", 401).status_code == 409
    assert s.fund(s.leaf, "DEBIT", 400).status_code == 200
    # Shrinking the ceiling below what is held leaves remaining negative, reserved intact.
    r = s.fund(s.leaf, "RESET", 500)
    assert r.json()["new_remaining"] == {"unit": UNIT, "amount": -100}
    assert s.reserve(1).status_code == 409
    r = s.commit(rid, 450)
    assert r.status_code == 200, r.text
    leaf = s.ledger(s.leaf)
    assert (leaf["reserved"], leaf["spent"], leaf["remaining"]) == (0, 450, 50)
    assert s.fund(s.leaf, "CREDIT", 1000).status_code == 200
    assert s.reserve(1000).status_code == 200
    s.ledger(s.root)


def test_credit_repays_overdraft_debt_and_reopens_the_scope(
    setup: Callable[..., Setup], admin: httpx.Client
) -> None:
    s = setup(overdraft_limit=amt(500))
    rid = s.reserve(1000, overage_policy="ALLOW_WITH_OVERDRAFT").json()["reservation_id"]
    r = s.commit(rid, 1300)
    assert r.status_code == 200, r.text
    leaf = s.ledger(s.leaf)
    assert leaf["debt"] == 300
    assert leaf["remaining"] == -300
    # Tighten the limit below the debt: the ledger goes over limit and refuses reservations.
    r = admin.patch(
        "/v1/admin/budgets",
        params={"scope": s.leaf, "unit": UNIT},
        json={"overdraft_limit": amt(100)},
    )
    assert r.json()["is_over_limit"] is True
    r = s.reserve(1)
    assert r.status_code == 409
    assert r.json()["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    r = s.fund(s.leaf, "CREDIT", 400)
    assert r.json()["new_debt"] == amt(0)
    leaf = s.ledger(s.leaf)
    assert (leaf["debt"], leaf["remaining"], leaf["is_over_limit"]) == (0, 100, False)
    assert s.reserve(100).status_code == 200


def test_frozen_budget_and_suspended_tenant_stop_the_runtime(
    setup: Callable[..., Setup], admin: httpx.Client
) -> None:
    s = setup()
    params = {"scope": s.leaf, "unit": UNIT}
    assert admin.post("/v1/admin/budgets/freeze", params=params).status_code == 200
    r = s.reserve(1)
    assert r.status_code == 409
    assert r.json()["error"] == "BUDGET_FROZEN"
    admin.post("/v1/admin/budgets/unfreeze", params=params)
    assert s.reserve(1).status_code == 200
    admin.patch(f"/v1/admin/tenants/{s.t}", json={"status": "SUSPENDED"})
    assert s.reserve(1).status_code == 401
    admin.patch(f"/v1/admin/tenants/{s.t}", json={"status": "ACTIVE"})
    assert s.reserve(1).status_code == 200


def test_closing_a_tenant_returns_open_holds_exactly_once(
    setup: Callable[..., Setup], admin: httpx.Client
) -> None:
    s = setup()
    r = s.reserve(300, ttl_ms=1000, grace_period_ms=0)
    assert r.status_code == 200, r.text
    rid = r.json()["reservation_id"]
    assert s.ledger(s.leaf)["reserved"] == 300
    assert admin.patch(f"/v1/admin/tenants/{s.t}", json={"status": "CLOSED"}).status_code == 200
    leaf = s.ledger(s.leaf)
    assert (leaf["status"], leaf["reserved"], leaf["remaining"]) == ("CLOSED", 0, 1000)
    # Let the reservation expire and the sweeper pass: nothing is refunded a second time.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = admin.get(f"/v1/reservations/{rid}")
        if got.status_code == 410 or got.json().get("status") == "EXPIRED":
            break
        time.sleep(0.2)
    else:
        pytest.fail("the reservation never expired")
    assert s.ledger(s.leaf) == leaf
    assert s.ledger(s.root)["remaining"] == 10_000
    # Re-closing is a no-op.
    assert admin.patch(f"/v1/admin/tenants/{s.t}", json={"status": "CLOSED"}).status_code == 200
    assert s.ledger(s.leaf) == leaf
