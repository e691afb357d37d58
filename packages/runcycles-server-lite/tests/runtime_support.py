"""Helpers shared by the runtime-plane tests (real server, real Redis, real HTTP)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from runcycles_server_lite.runtime import read_reservation
from runcycles_server_lite.store import Store
from runcycles_server_lite.testing import ServerHandle

UNIT = "USD_MICROCENTS"
ACTION = {"kind": "llm.completion", "name": "openai:gpt-4o"}


def new_tenant(prefix: str = "rt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def key() -> str:
    return uuid.uuid4().hex


def amount(n: int, unit: str = UNIT) -> dict[str, Any]:
    return {"unit": unit, "amount": n}


@dataclass
class Tenant:
    """A provisioned tenant with an API key and an HTTP client bound to it."""

    server: ServerHandle
    name: str
    secret: str
    http: httpx.Client = field(repr=False)

    def subject(self, **levels: str) -> dict[str, str]:
        return {"tenant": self.name, **levels}

    def reserve(
        self,
        estimate: int,
        *,
        unit: str = UNIT,
        subject: dict[str, Any] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body = {
            "idempotency_key": extra.pop("idempotency_key", key()),
            "subject": subject or self.subject(),
            "action": ACTION,
            "estimate": amount(estimate, unit),
            **extra,
        }
        return self.http.post("/v1/reservations", json=body)

    def reserve_ok(self, estimate: int, **kw: Any) -> str:
        r = self.reserve(estimate, **kw)
        assert r.status_code == 200, r.text
        rid: str = r.json()["reservation_id"]
        return rid

    def commit(self, rid: str, actual: int, *, unit: str = UNIT, **extra: Any) -> httpx.Response:
        body = {
            "idempotency_key": extra.pop("idempotency_key", key()),
            "actual": amount(actual, unit),
        }
        return self.http.post(f"/v1/reservations/{rid}/commit", json={**body, **extra})

    def release(self, rid: str, **extra: Any) -> httpx.Response:
        body = {"idempotency_key": extra.pop("idempotency_key", key()), **extra}
        return self.http.post(f"/v1/reservations/{rid}/release", json=body)

    def extend(self, rid: str, by: int, **extra: Any) -> httpx.Response:
        body = {"idempotency_key": extra.pop("idempotency_key", key()), "extend_by_ms": by}
        return self.http.post(f"/v1/reservations/{rid}/extend", json={**body, **extra})

    def event(
        self, actual: int, *, subject: dict[str, Any] | None = None, **extra: Any
    ) -> httpx.Response:
        body = {
            "idempotency_key": extra.pop("idempotency_key", key()),
            "subject": subject or self.subject(),
            "action": ACTION,
            "actual": amount(actual, extra.pop("unit", UNIT)),
            **extra,
        }
        return self.http.post("/v1/events", json=body)

    def decide(
        self, estimate: int, *, subject: dict[str, Any] | None = None, **extra: Any
    ) -> httpx.Response:
        body = {
            "idempotency_key": extra.pop("idempotency_key", key()),
            "subject": subject or self.subject(),
            "action": ACTION,
            "estimate": amount(estimate, extra.pop("unit", UNIT)),
            **extra,
        }
        return self.http.post("/v1/decide", json=body)

    def ledger(self) -> dict[str, dict[str, Any]]:
        return ledgers(self.server, self.name)

    def set_budget(self, scope: str, unit: str = UNIT, **fields: str) -> None:
        full = f"tenant:{self.name}" + (f"/{scope}" if scope else "")

        async def go(store: Store) -> None:
            await store.redis.hset(store.keys.budget(self.name, full, unit), mapping=fields)

        self.server.run_store(go)

    def set_tenant(self, **fields: str) -> None:
        async def go(store: Store) -> None:
            await store.redis.hset(store.keys.tenant(self.name), mapping=fields)

        self.server.run_store(go)

    def raw_reservation(self, rid: str) -> dict[str, str]:
        """The stored record (ACTIVE hash, or the finalized record decoded to its names)."""

        async def go(store: Store) -> dict[str, str]:
            return await read_reservation(store, self.name, rid)

        return self.server.run_store(go)


@contextlib.contextmanager
def make_tenant(
    server: ServerHandle, budgets: dict[str, int], *, prefix: str = "rt", **provision: Any
) -> Iterator[Tenant]:
    name = new_tenant(prefix)
    secret = server.provision(name, budgets, **provision)
    with httpx.Client(
        base_url=server.base_url, headers={"X-Cycles-API-Key": secret}, timeout=10
    ) as client:
        yield Tenant(server, name, secret, client)


def ledgers(server: ServerHandle, tenant: str) -> dict[str, dict[str, Any]]:
    """Every budget of ``tenant``: ``"<scope>|<unit>" -> {field: int | str}``."""

    async def go(store: Store) -> dict[str, dict[str, Any]]:
        members: list[str] = await store.redis.zrange(store.keys.budgets(tenant), 0, -1)
        out: dict[str, dict[str, Any]] = {}
        for m in members:
            scope, _, unit = m.rpartition("|")
            rec: dict[str, str] = await store.redis.hgetall(store.keys.budget(tenant, scope, unit))
            out[m] = {
                k: (
                    int(v)
                    if k
                    in ("allocated", "remaining", "reserved", "spent", "debt", "overdraft_limit")
                    else v
                )
                for k, v in rec.items()
            }
        return out

    return server.run_store(go)


def short(ledger: dict[str, dict[str, Any]], tenant: str) -> dict[str, tuple[int, int, int, int]]:
    """``scope suffix -> (remaining, reserved, spent, debt)`` for compact assertions."""
    out = {}
    for m, rec in ledger.items():
        scope = m.rpartition("|")[0]
        suffix = scope[len(f"tenant:{tenant}") :].lstrip("/")
        out[suffix] = (rec["remaining"], rec["reserved"], rec["spent"], rec["debt"])
    return out


def assert_identity(ledger: dict[str, dict[str, Any]]) -> None:
    for m, rec in ledger.items():
        assert (
            rec["allocated"] == rec["remaining"] + rec["spent"] + rec["reserved"] + rec["debt"]
        ), (m, rec)
        assert min(rec["reserved"], rec["spent"], rec["debt"]) >= 0, (m, rec)


TenantFactory = Callable[..., Tenant]


@pytest.fixture
def mk(server: ServerHandle) -> Iterator[TenantFactory]:
    """``mk({scope: allocated}, **provision)`` → a fresh :class:`Tenant` (closed at teardown)."""
    with contextlib.ExitStack() as stack:

        def make(budgets: dict[str, int] | None = None, **kw: Any) -> Tenant:
            return stack.enter_context(make_tenant(server, budgets or {}, **kw))

        yield make
