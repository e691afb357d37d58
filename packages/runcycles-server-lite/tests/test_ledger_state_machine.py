"""Random reserve/commit/release/extend/event/expire sequences against the real server.

After every step, on every budget: the ledger identity holds, `reserved` equals the holds of
the reservations the model believes ACTIVE, `spent + debt` equals everything charged, debt
never exceeds the overdraft limit and remaining never goes below -debt. A concurrent commit
and release of one reservation has exactly one winner.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from runtime_support import ACTION, amount, assert_identity, key, ledgers, new_tenant

from runcycles_server_lite.runtime import read_reservation
from runcycles_server_lite.store import Store
from runcycles_server_lite.sweeper import Sweeper
from runcycles_server_lite.testing import ServerHandle

POLICIES = st.sampled_from(["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"])
OVERDRAFT = 100


def test_ledger_state_machine(server: ServerHandle) -> None:
    class Ledger(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.tenant = new_tenant("sm")
            secret = server.provision(
                self.tenant, {"": 2000, "workspace:w": 800}, overdraft_limit=OVERDRAFT
            )
            self.headers = {"X-Cycles-API-Key": secret}
            self.http = httpx.Client(base_url=server.base_url, headers=self.headers, timeout=10)
            self.subject = {"tenant": self.tenant, "workspace": "w"}
            self.active: dict[str, int] = {}
            self.consumed = 0

        def teardown(self) -> None:
            self.http.close()

        def _pick(self, i: int) -> str:
            # Insertion order, not id order: ids are random, and the choice must be the same
            # when Hypothesis replays a sequence.
            rids = list(self.active)
            return rids[i % len(rids)]

        @rule(estimate=st.integers(0, 400), policy=POLICIES)
        def reserve(self, estimate: int, policy: str) -> None:
            before = ledgers(server, self.tenant)
            r = self.http.post(
                "/v1/reservations",
                json={
                    "idempotency_key": key(),
                    "subject": self.subject,
                    "action": ACTION,
                    "estimate": amount(estimate),
                    "overage_policy": policy,
                },
            )
            if r.status_code == 200:
                self.active[r.json()["reservation_id"]] = estimate
                return
            assert r.status_code == 409, r.text
            code = r.json()["error"]
            if code == "BUDGET_EXCEEDED":
                assert any(b["remaining"] < estimate for b in before.values())
            elif code == "OVERDRAFT_LIMIT_EXCEEDED":
                assert any(b["is_over_limit"] == "true" for b in before.values())
            else:
                raise AssertionError(f"unexpected refusal {code}")

        @rule(estimate=st.integers(0, 400), endpoint=st.sampled_from(["dry_run", "decide"]))
        def evaluate(self, estimate: int, endpoint: str) -> None:
            before = ledgers(server, self.tenant)
            body: dict[str, Any] = {
                "idempotency_key": key(),
                "subject": self.subject,
                "action": ACTION,
                "estimate": amount(estimate),
            }
            if endpoint == "dry_run":
                r = self.http.post("/v1/reservations", json={**body, "dry_run": True})
            else:
                r = self.http.post("/v1/decide", json=body)
            assert r.status_code == 200, r.text
            decision = r.json()["decision"]
            fits = all(
                b["remaining"] >= estimate and b["is_over_limit"] != "true" for b in before.values()
            )
            assert (decision == "ALLOW") == fits, (r.json(), before)
            assert ledgers(server, self.tenant) == before

        @precondition(lambda self: self.active)
        @rule(i=st.integers(0, 100), actual=st.integers(0, 600))
        def commit(self, i: int, actual: int) -> None:
            rid = self._pick(i)
            r = self.http.post(
                f"/v1/reservations/{rid}/commit",
                json={"idempotency_key": key(), "actual": amount(actual)},
            )
            if r.status_code == 200:
                charged = r.json()["charged"]["amount"]
                assert charged <= actual
                if actual <= self.active[rid]:
                    assert charged == actual
                self.consumed += charged
                del self.active[rid]
            else:
                assert r.status_code == 409, r.text
                assert r.json()["error"] in ("BUDGET_EXCEEDED", "OVERDRAFT_LIMIT_EXCEEDED")
                assert actual > self.active[rid]

        @precondition(lambda self: self.active)
        @rule(i=st.integers(0, 100))
        def release(self, i: int) -> None:
            rid = self._pick(i)
            r = self.http.post(f"/v1/reservations/{rid}/release", json={"idempotency_key": key()})
            assert r.status_code == 200, r.text
            assert r.json()["released"]["amount"] == self.active.pop(rid)

        @precondition(lambda self: self.active)
        @rule(i=st.integers(0, 100), by=st.integers(1, 60_000))
        def extend(self, i: int, by: int) -> None:
            rid = self._pick(i)
            r = self.http.post(
                f"/v1/reservations/{rid}/extend",
                json={"idempotency_key": key(), "extend_by_ms": by},
            )
            assert r.status_code in (200, 409), r.text
            if r.status_code == 409:
                assert r.json()["error"] == "MAX_EXTENSIONS_EXCEEDED"

        @rule(actual=st.integers(0, 500), policy=POLICIES)
        def event(self, actual: int, policy: str) -> None:
            r = self.http.post(
                "/v1/events",
                json={
                    "idempotency_key": key(),
                    "subject": self.subject,
                    "action": ACTION,
                    "actual": amount(actual),
                    "overage_policy": policy,
                },
            )
            if r.status_code == 201:
                body = r.json()
                self.consumed += body["charged"]["amount"] if "charged" in body else actual
            else:
                assert r.status_code == 409, r.text
                assert r.json()["error"] in ("BUDGET_EXCEEDED", "OVERDRAFT_LIMIT_EXCEEDED")

        @precondition(lambda self: self.active)
        @rule(i=st.integers(0, 100))
        def expire(self, i: int) -> None:
            rid = self._pick(i)
            tenant = self.tenant

            async def make_due(store: Store) -> None:
                await store.redis.hset(
                    store.keys.reservation(tenant, rid),
                    mapping={"expires_at": "1", "grace_ms": "0"},
                )
                await store.redis.zadd(store.keys.reservation_expiry(tenant), {rid: 1})

            server.run_store(make_due)
            for _ in range(200):
                if server.run_store(lambda s: Sweeper(s, server.settings).sweep()).ran:
                    break
                time.sleep(0.01)
            rec = server.run_store(lambda s: read_reservation(s, tenant, rid))
            assert rec["status"] == "EXPIRED"
            del self.active[rid]

        @precondition(lambda self: self.active)
        @rule(i=st.integers(0, 100), actual=st.integers(0, 50))
        def commit_release_race(self, i: int, actual: int) -> None:
            rid = self._pick(i)

            async def race() -> list[httpx.Response]:
                async with httpx.AsyncClient(base_url=server.base_url, headers=self.headers) as c:
                    commit = c.post(
                        f"/v1/reservations/{rid}/commit",
                        json={
                            "idempotency_key": key(),
                            "actual": amount(min(actual, self.active[rid])),
                        },
                    )
                    release = c.post(
                        f"/v1/reservations/{rid}/release", json={"idempotency_key": key()}
                    )
                    return list(await asyncio.gather(commit, release))

            commit, release = asyncio.run(race())
            assert sorted([commit.status_code, release.status_code]) == [200, 409]
            if commit.status_code == 200:
                self.consumed += commit.json()["charged"]["amount"]
            del self.active[rid]

        @invariant()
        def ledger_is_consistent(self) -> None:
            led: dict[str, dict[str, Any]] = ledgers(server, self.tenant)
            assert_identity(led)
            for b in led.values():
                assert b["reserved"] == sum(self.active.values()), (b, self.active)
                assert b["spent"] + b["debt"] == self.consumed, (b, self.consumed)
                assert b["debt"] <= b["overdraft_limit"]
                assert b["remaining"] >= -b["debt"]

    run_state_machine_as_test(
        Ledger, settings=settings(max_examples=25, stateful_step_count=15, deadline=None)
    )
