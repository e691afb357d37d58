"""POST /v1/admin/budgets/fund: every operation, the ledger identity, idempotency, int64 edges."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle

UNIT = "USD_MICROCENTS"
INT64_MAX = 2**63 - 1
FIELDS = ("allocated", "remaining", "reserved", "spent", "debt")


def tid() -> str:
    return f"f-{uuid.uuid4().hex[:12]}"


def amt(n: int, unit: str = UNIT) -> dict[str, object]:
    return {"unit": unit, "amount": n}


@pytest.fixture
def admin(server: ServerHandle) -> Iterator[httpx.Client]:
    with server.admin_client() as client:
        yield client


def new_budget(server: ServerHandle, allocated: int = 1000, **state: int) -> tuple[str, str]:
    """A tenant with one root budget, optionally forced into ``state`` (as the runtime would
    leave it: reservations held, spend and debt recorded)."""
    t = tid()
    server.provision(t, {"": allocated})
    if state:
        set_state(server, t, **state)
    return t, f"tenant:{t}"


def set_state(server: ServerHandle, tenant: str, **fields: int | str) -> None:
    async def go(store: Store) -> None:
        key = store.keys.budget(tenant, f"tenant:{tenant}", UNIT)
        await store.redis.hset(key, mapping={k: str(v) for k, v in fields.items()})

    server.run_store(go)


def ledger(server: ServerHandle, tenant: str) -> dict[str, str]:
    async def go(store: Store) -> dict[str, str]:
        rec: dict[str, str] = await store.redis.hgetall(
            store.keys.budget(tenant, f"tenant:{tenant}", UNIT)
        )
        return rec

    return server.run_store(go)


def ints(rec: dict[str, str]) -> dict[str, int]:
    return {f: int(rec[f]) for f in FIELDS}


def assert_identity(rec: dict[str, str]) -> None:
    v = ints(rec)
    assert v["allocated"] == v["remaining"] + v["spent"] + v["reserved"] + v["debt"], rec


def fund(admin: httpx.Client, tenant: str, op: str, amount: int, **extra: object) -> httpx.Response:
    return admin.post(
        "/v1/admin/budgets/fund",
        params={"tenant_id": tenant, "scope": f"tenant:{tenant}", "unit": UNIT},
        json={"operation": op, "amount": amt(amount), **extra},
    )


def test_credit_and_debit(server: ServerHandle, admin: httpx.Client) -> None:
    t, _ = new_budget(server, 1000, reserved=200, remaining=800)
    r = fund(admin, t, "CREDIT", 500)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["operation"] == "CREDIT"
    assert (body["previous_allocated"], body["new_allocated"]) == (amt(1000), amt(1500))
    assert (body["previous_remaining"], body["new_remaining"]) == (amt(800), amt(1300))
    assert body["timestamp"].endswith("Z")
    r = fund(admin, t, "DEBIT", 1300)
    assert r.json()["new_remaining"] == amt(0)
    rec = ledger(server, t)
    assert ints(rec) == {"allocated": 200, "remaining": 0, "reserved": 200, "spent": 0, "debt": 0}
    r = fund(admin, t, "DEBIT", 1)
    assert r.status_code == 409
    assert r.json()["error"] == "BUDGET_EXCEEDED"
    assert ledger(server, t) == rec


def test_credit_repays_debt_first(server: ServerHandle, admin: httpx.Client) -> None:
    # Overdrawn: 100 allocated, 100 spent, 30 more consumed as debt (remaining -30).
    t, _ = new_budget(server, 100, spent=100, debt=30, remaining=-30, is_over_limit="true")
    r = fund(admin, t, "CREDIT", 50)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["previous_debt"], body["new_debt"]) == (amt(30), amt(0))
    assert (body["previous_remaining"], body["new_remaining"]) == (
        {"unit": UNIT, "amount": -30},
        amt(20),
    )
    rec = ledger(server, t)
    assert ints(rec) == {"allocated": 150, "remaining": 20, "reserved": 0, "spent": 130, "debt": 0}
    assert rec["is_over_limit"] == "false"
    assert_identity(rec)
    # A credit smaller than the debt repays part of it.
    t2, _ = new_budget(server, 100, spent=100, debt=30, remaining=-30)
    fund(admin, t2, "CREDIT", 10)
    assert ints(ledger(server, t2))["debt"] == 20


def test_reset_keeps_spent_reserved_and_debt(server: ServerHandle, admin: httpx.Client) -> None:
    t, _ = new_budget(server, 1000, reserved=100, spent=300, debt=50, remaining=550)
    r = fund(admin, t, "RESET", 400)
    assert r.json()["new_remaining"] == {"unit": UNIT, "amount": -50}
    rec = ledger(server, t)
    assert ints(rec) == {
        "allocated": 400,
        "remaining": -50,
        "reserved": 100,
        "spent": 300,
        "debt": 50,
    }
    assert_identity(rec)


def test_reset_spent_starts_a_new_period(server: ServerHandle, admin: httpx.Client) -> None:
    t, _ = new_budget(server, 1000, reserved=100, spent=600, debt=0, remaining=300)
    r = fund(admin, t, "RESET_SPENT", 1000)
    body = r.json()
    assert (body["previous_spent"], body["new_spent"]) == (amt(600), amt(0))
    assert body["new_remaining"] == amt(900)
    r = fund(admin, t, "RESET_SPENT", 1000, spent=amt(250))
    assert r.json()["new_spent"] == amt(250)
    rec = ledger(server, t)
    assert ints(rec) == {
        "allocated": 1000,
        "remaining": 650,
        "reserved": 100,
        "spent": 250,
        "debt": 0,
    }
    r = fund(admin, t, "RESET_SPENT", 1000, spent=amt(1, "TOKENS"))
    assert r.status_code == 400
    assert r.json()["error"] == "UNIT_MISMATCH"


def test_repay_debt(server: ServerHandle, admin: httpx.Client) -> None:
    t, _ = new_budget(server, 100, spent=100, debt=30, remaining=-30, overdraft_limit=10)
    set_state(server, t, is_over_limit="true")
    r = fund(admin, t, "REPAY_DEBT", 20)
    body = r.json()
    assert (body["previous_debt"], body["new_debt"]) == (amt(30), amt(10))
    assert body["new_allocated"] == amt(100)
    rec = ledger(server, t)
    assert rec["is_over_limit"] == "false"  # debt 10 is within the limit of 10
    # Repaying more than the debt credits the excess.
    r = fund(admin, t, "REPAY_DEBT", 25)
    body = r.json()
    assert body["new_debt"] == amt(0)
    assert body["new_allocated"] == amt(115)
    assert body["new_remaining"] == amt(15)
    assert_identity(ledger(server, t))


def test_fund_errors(server: ServerHandle, admin: httpx.Client, http: httpx.Client) -> None:
    t, scope = new_budget(server)
    r = admin.post(
        "/v1/admin/budgets/fund",
        params={"scope": scope, "unit": UNIT},
        json={"operation": "CREDIT", "amount": amt(1)},
    )
    assert r.status_code == 400  # tenant_id is required with the admin key
    r = fund(admin, t, "CREDIT", 1, bogus=1)
    assert r.status_code == 400
    r = fund(admin, t, "GIFT", 1)
    assert r.status_code == 400
    r = admin.post(
        "/v1/admin/budgets/fund",
        params={"tenant_id": t, "scope": scope, "unit": UNIT},
        json={"operation": "CREDIT", "amount": amt(1, "TOKENS")},
    )
    assert r.json()["error"] == "UNIT_MISMATCH"
    r = admin.post(
        "/v1/admin/budgets/fund",
        params={"tenant_id": t, "scope": f"{scope}/agent:nobody", "unit": UNIT},
        json={"operation": "CREDIT", "amount": amt(1)},
    )
    assert r.status_code == 404
    assert r.json()["error"] == "BUDGET_NOT_FOUND"
    # With a tenant key the tenant comes from the key.
    secret = server.provision(t)
    r = http.post(
        "/v1/admin/budgets/fund",
        params={"scope": scope, "unit": UNIT},
        json={"operation": "CREDIT", "amount": amt(1)},
        headers={"X-Cycles-API-Key": secret},
    )
    assert r.status_code == 200


def test_int64_edges_are_exact_and_overflow_is_refused(
    server: ServerHandle, admin: httpx.Client
) -> None:
    big = INT64_MAX - 10
    t, _ = new_budget(server, big)
    r = fund(admin, t, "CREDIT", 10)
    assert r.json()["new_allocated"] == amt(INT64_MAX)
    rec = ledger(server, t)
    assert rec["allocated"] == str(INT64_MAX)
    r = fund(admin, t, "CREDIT", 1)
    assert r.status_code == 400
    assert ledger(server, t) == rec
    r = fund(admin, t, "DEBIT", INT64_MAX - 123_456_789_012)
    assert r.json()["new_remaining"] == amt(123_456_789_012)
    t2, _ = new_budget(server, 0, remaining=-(2**62), debt=2**62)
    r = fund(admin, t2, "RESET", 2**62 + 987_654_321_987)
    assert r.json()["new_remaining"] == amt(987_654_321_987)


def test_idempotent_replay_and_mismatch(server: ServerHandle, admin: httpx.Client) -> None:
    t, _ = new_budget(server, 100)
    first = fund(admin, t, "CREDIT", 40, idempotency_key="topup-1", reason="march")
    assert first.status_code == 200
    again = fund(admin, t, "CREDIT", 40, idempotency_key="topup-1", reason="retry")
    assert again.status_code == 200
    assert again.content == first.content  # byte-identical, from the stored snapshot
    assert int(ledger(server, t)["allocated"]) == 140  # applied once
    r = fund(admin, t, "CREDIT", 41, idempotency_key="topup-1")
    assert r.status_code == 409
    assert r.json()["error"] == "IDEMPOTENCY_MISMATCH"
    r = fund(admin, t, "DEBIT", 40, idempotency_key="topup-1")
    assert r.status_code == 409
    # Keys are scoped per tenant: another tenant's identical key is a fresh operation.
    t2, _ = new_budget(server, 100)
    r = fund(admin, t2, "CREDIT", 40, idempotency_key="topup-1")
    assert r.json()["previous_allocated"] == amt(100)
    assert int(ledger(server, t2)["allocated"]) == 140
    # A replay wins over state errors that arose after the original.
    admin.post("/v1/admin/budgets/freeze", params={"scope": f"tenant:{t}", "unit": UNIT})
    r = fund(admin, t, "CREDIT", 40, idempotency_key="topup-1")
    assert r.status_code == 200
    assert r.content == first.content


OPS = st.sampled_from(["CREDIT", "DEBIT", "RESET", "RESET_SPENT", "REPAY_DEBT"])


def model(state: dict[str, int], op: str, amount: int, spent: int | None) -> dict[str, int] | None:
    """What the ledger must look like after ``op`` (None: the operation is refused)."""
    s = dict(state)
    if op == "CREDIT":
        repaid = min(s["debt"], amount)
        s["allocated"] += amount
        s["remaining"] += amount
        s["debt"] -= repaid
        s["spent"] += repaid
    elif op == "DEBIT":
        if s["remaining"] < amount:
            return None
        s["allocated"] -= amount
        s["remaining"] -= amount
    elif op == "RESET":
        s["allocated"] = amount
        s["remaining"] = amount - s["reserved"] - s["spent"] - s["debt"]
    elif op == "RESET_SPENT":
        s["allocated"] = amount
        s["spent"] = spent or 0
        s["remaining"] = amount - s["reserved"] - s["spent"] - s["debt"]
    else:
        repaid = min(s["debt"], amount)
        s["debt"] -= repaid
        s["remaining"] += amount
        s["allocated"] += amount - repaid
    return s


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    start=st.fixed_dictionaries(
        {
            "reserved": st.integers(0, 10**15),
            "spent": st.integers(0, 10**15),
            "debt": st.integers(0, 10**15),
            "available": st.integers(0, 10**15),
        }
    ),
    steps=st.lists(
        st.tuples(OPS, st.integers(0, 10**16), st.none() | st.integers(0, 10**15)),
        min_size=1,
        max_size=6,
    ),
)
def test_ledger_identity_holds_for_any_sequence(
    server: ServerHandle,
    admin: httpx.Client,
    start: dict[str, int],
    steps: list[tuple[str, int, int | None]],
) -> None:
    # In overdraft, remaining is negative by the debt (the reference's convention).
    state = {k: start[k] for k in ("reserved", "spent", "debt")}
    state["remaining"] = start["available"] - start["debt"]
    state["allocated"] = start["available"] + start["reserved"] + start["spent"]
    t, _ = new_budget(server, 0)
    set_state(server, t, **state)
    for op, amount, spent in steps:
        extra = {"spent": amt(spent)} if spent is not None and op == "RESET_SPENT" else {}
        r = fund(admin, t, op, amount, **extra)
        expected = model(state, op, amount, spent)
        rec = ledger(server, t)
        if expected is None:
            assert r.status_code == 409, r.text
        else:
            assert r.status_code == 200, r.text
            state = expected
            # overdraft_limit is 0, so any debt left is over the limit.
            assert rec["is_over_limit"] == ("true" if state["debt"] > 0 else "false")
        assert ints(rec) == state
        assert_identity(rec)


def test_concurrent_funding_is_exact_and_a_shared_key_applies_once(
    server: ServerHandle, admin: httpx.Client
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    t, _ = new_budget(server, 0)

    def call(i: int) -> httpx.Response:
        extra = {"idempotency_key": "same"} if i % 2 else {}
        return fund(admin, t, "CREDIT", 7, **extra)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(call, range(64)))
    assert all(r.status_code == 200 for r in responses)
    shared = {r.content for i, r in enumerate(responses) if i % 2}
    assert len(shared) == 1  # every retry got the one stored result
    rec = ledger(server, t)
    assert int(rec["allocated"]) == 7 * (32 + 1)
    assert_identity(rec)
