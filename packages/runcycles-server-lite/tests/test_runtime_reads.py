"""GET /v1/reservations (list), GET /v1/balances and POST /v1/events."""

from __future__ import annotations

import datetime as dt

import httpx
from runtime_support import UNIT, TenantFactory, amount, assert_identity, key, mk, short

__all__ = ["mk"]


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat()


def test_list_filters_and_default_order(mk: TenantFactory) -> None:
    t = mk({"": 10_000})
    k = key()
    a = t.reserve_ok(10, subject=t.subject(workspace="prod", agent="bot"), idempotency_key=k)
    b = t.reserve_ok(20, subject=t.subject(workspace="dev"))
    c = t.reserve_ok(30, subject=t.subject(workspace="prod"))
    t.commit(b, 5)

    def ids(**params: str) -> list[str]:
        r = t.http.get("/v1/reservations", params=params)
        assert r.status_code == 200, r.text
        return [x["reservation_id"] for x in r.json()["reservations"]]

    assert ids() == [c, b, a]  # newest first
    assert ids(workspace="prod") == [c, a]
    assert ids(workspace="PROD", agent="bot") == [a]
    assert ids(status="COMMITTED") == [b]
    assert ids(status="ACTIVE") == [c, a]
    assert ids(idempotency_key=k) == [a]
    assert ids(idempotency_key="unknown") == []
    assert ids(tenant=t.name) == [c, b, a]
    assert ids(sort_by="reserved", sort_dir="asc") == [a, b, c]
    assert ids(sort_by="reserved") == [c, b, a]
    rows = t.http.get("/v1/reservations", params={"status": "COMMITTED"}).json()["reservations"]
    assert rows[0]["committed"] == amount(5)
    assert "metadata" not in rows[0]
    # Unknown additive parameters are ignored.
    assert ids(frobnicate="1") == [c, b, a]


def test_list_time_windows(mk: TenantFactory) -> None:
    t = mk({"": 10_000})
    a = t.reserve_ok(10)
    b = t.reserve_ok(10)
    t.release(a)
    ra = t.raw_reservation(a)
    created_a, created_b = int(ra["created_at"]), int(t.raw_reservation(b)["created_at"])

    def ids(**params: str) -> list[str]:
        r = t.http.get("/v1/reservations", params=params)
        assert r.status_code == 200, r.text
        return sorted(x["reservation_id"] for x in r.json()["reservations"])

    assert ids(**{"from": _iso(created_b), "to": ""}) == ([a, b] if created_a == created_b else [b])
    assert ids(to=_iso(created_a - 1)) == []
    assert ids(finalized_from=_iso(int(ra["finalized_at"]))) == [a]
    assert ids(finalized_to=_iso(int(ra["finalized_at"]) + 1000)) == [a]
    assert ids(expires_from=_iso(created_a), expires_to=_iso(created_a + 3_600_000)) == sorted(
        [a, b]
    )
    assert ids(expires_from="", finalized_to="") == sorted([a, b])
    bad = t.http.get("/v1/reservations", params={"from": _iso(2000), "to": _iso(1000)})
    assert bad.status_code == 400
    assert t.http.get("/v1/reservations", params={"from": "yesterday"}).status_code == 400
    assert t.http.get("/v1/reservations", params={"status": "DONE"}).status_code == 400
    assert t.http.get("/v1/reservations", params={"sort_by": "color"}).status_code == 400
    assert t.http.get("/v1/reservations", params={"limit": "0"}).status_code == 400
    assert t.http.get("/v1/reservations", params={"limit": "201"}).status_code == 400


def test_list_pagination_with_cursor(mk: TenantFactory) -> None:
    t = mk({"": 10_000})
    made = [t.reserve_ok(i + 1) for i in range(7)]
    for sort in ({}, {"sort_by": "reserved", "sort_dir": "asc"}):
        seen: list[str] = []
        params: dict[str, str] = {"limit": "3", **sort}
        pages = 0
        while True:
            body = t.http.get("/v1/reservations", params=params).json()
            seen += [x["reservation_id"] for x in body["reservations"]]
            pages += 1
            if not body["has_more"]:
                assert "next_cursor" not in body
                break
            params["cursor"] = body["next_cursor"]
        assert pages == 3
        assert sorted(seen) == sorted(made)
        assert len(seen) == len(set(seen))
    first = t.http.get("/v1/reservations", params={"limit": "3"}).json()
    other_filter = t.http.get(
        "/v1/reservations",
        params={"limit": "3", "status": "ACTIVE", "cursor": first["next_cursor"]},
    )
    assert other_filter.status_code == 400
    assert t.http.get("/v1/reservations", params={"cursor": "!!!"}).status_code == 400


def test_list_skips_and_prunes_reservations_whose_record_is_gone(mk: TenantFactory) -> None:
    t = mk({"": 10_000})
    keep, gone = t.reserve_ok(1), t.reserve_ok(2)

    async def drop(store):  # type: ignore[no-untyped-def]
        await store.redis.delete(store.keys.reservation(t.name, gone))

    t.server.run_store(drop)
    rows = t.http.get("/v1/reservations").json()["reservations"]
    assert [x["reservation_id"] for x in rows] == [keep]

    async def indexed(store):  # type: ignore[no-untyped-def]
        return await store.redis.zrange(store.keys.reservation_index(t.name), 0, -1)

    assert t.server.run_store(indexed) == [keep]


def test_balances_filters_and_pagination(mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:prod": 500, "workspace:prod/agent:bot": 100, "workspace:dev": 50})
    t.reserve_ok(40, subject=t.subject(workspace="prod", agent="bot"))
    base = f"tenant:{t.name}"

    def scopes(**params: str) -> list[str]:
        r = t.http.get("/v1/balances", params=params)
        assert r.status_code == 200, r.text
        return [b["scope"] for b in r.json()["balances"]]

    assert scopes(tenant=t.name) == [
        base,
        f"{base}/workspace:dev",
        f"{base}/workspace:prod",
        f"{base}/workspace:prod/agent:bot",
    ]
    assert scopes(workspace="prod") == [
        f"{base}/workspace:prod",
        f"{base}/workspace:prod/agent:bot",
    ]
    assert scopes(agent="bot", include_children="true") == [f"{base}/workspace:prod/agent:bot"]
    assert scopes(scope_prefix=f"{base}/workspace:d") == [f"{base}/workspace:dev"]
    assert scopes(tenant_id=t.name, unit="TOKENS") == []
    bal = t.http.get("/v1/balances", params={"agent": "bot"}).json()["balances"][0]
    assert bal["remaining"] == amount(60)
    assert bal["reserved"] == amount(40)
    assert bal["allocated"] == amount(100)
    assert bal["is_over_limit"] is False
    page1 = t.http.get("/v1/balances", params={"tenant": t.name, "limit": "3"}).json()
    assert page1["has_more"] is True
    page2 = t.http.get(
        "/v1/balances", params={"tenant": t.name, "limit": "3", "cursor": page1["next_cursor"]}
    ).json()
    assert [b["scope"] for b in page2["balances"]] == [f"{base}/workspace:prod/agent:bot"]
    assert page2["has_more"] is False
    assert t.http.get("/v1/balances").status_code == 400
    assert t.http.get("/v1/balances", params={"tenant": "someone-else"}).status_code == 403
    assert t.http.get("/v1/balances", params={"tenant_id": "someone-else"}).status_code == 403
    assert t.http.get("/v1/balances", params={"tenant": t.name, "unit": "EUR"}).status_code == 400


def test_balances_need_the_permission(mk: TenantFactory) -> None:
    t = mk({"": 10}, permissions=["reservations:create"])
    assert t.http.get("/v1/balances", params={"tenant": t.name}).status_code == 403
    assert t.http.get("/v1/reservations").status_code == 403


def test_event_debits_every_budgeted_scope(mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:w": 300})
    k = key()
    r = t.event(120, subject=t.subject(workspace="w"), idempotency_key=k, client_time_ms=5)
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "APPLIED"
    assert body["event_id"].startswith("evt_")
    assert "charged" not in body
    assert short(t.ledger(), t.name) == {"": (880, 0, 120, 0), "workspace:w": (180, 0, 120, 0)}
    again = t.event(120, subject=t.subject(workspace="w"), idempotency_key=k, client_time_ms=5)
    assert again.status_code == 201
    assert again.content == r.content
    assert t.event(121, subject=t.subject(workspace="w"), idempotency_key=k).status_code == 409
    assert short(t.ledger(), t.name) == {"": (880, 0, 120, 0), "workspace:w": (180, 0, 120, 0)}


def test_event_policies(mk: TenantFactory) -> None:
    t = mk({"": 100})
    rej = t.event(101, overage_policy="REJECT")
    assert rej.status_code == 409
    assert rej.json()["error"] == "BUDGET_EXCEEDED"
    capped = t.event(150).json()
    assert capped["charged"] == amount(100)
    led = t.ledger()
    assert short(led, t.name) == {"": (0, 0, 100, 0)}
    assert led[f"tenant:{t.name}|{UNIT}"]["is_over_limit"] == "true"
    # Over-limit and debt do not block events (post-only accounting).
    assert t.event(0).status_code == 201

    o = mk({"": 100}, overdraft_limit=50)
    assert o.event(130, overage_policy="ALLOW_WITH_OVERDRAFT").status_code == 201
    assert short(o.ledger(), o.name) == {"": (-30, 0, 100, 30)}
    too_much = o.event(21, overage_policy="ALLOW_WITH_OVERDRAFT")
    assert too_much.json()["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    assert_identity(o.ledger())


def test_event_errors(mk: TenantFactory) -> None:
    t = mk({"workspace:w": 100})
    assert t.event(1, subject=t.subject(workspace="x")).status_code == 404
    wrong_unit = t.event(1, unit="TOKENS", subject=t.subject(workspace="w"))
    assert wrong_unit.json()["error"] == "UNIT_MISMATCH"
    t.set_budget("workspace:w", status="FROZEN")
    assert t.event(1, subject=t.subject(workspace="w")).json()["error"] == "BUDGET_FROZEN"
    bad = t.http.post(
        "/v1/events",
        json={
            "idempotency_key": key(),
            "subject": t.subject(),
            "action": {"kind": "a", "name": "b"},
            "actual": amount(1),
            "client_time_ms": -1,
        },
    )
    assert bad.status_code == 400
    assert bad.json()["message"].startswith("client_time_ms")


def test_list_pages_across_index_chunks_and_equal_timestamps(mk: TenantFactory) -> None:
    import asyncio

    t = mk({"": 1_000_000})

    async def burst() -> list[str]:
        async with httpx.AsyncClient(
            base_url=t.server.base_url, headers={"X-Cycles-API-Key": t.secret}, timeout=30
        ) as c:
            rs = await asyncio.gather(
                *(
                    c.post(
                        "/v1/reservations",
                        json={
                            "idempotency_key": key(),
                            "subject": t.subject(),
                            "action": {"kind": "a", "name": "b"},
                            "estimate": amount(1),
                        },
                    )
                    for _ in range(260)
                )
            )
            return [r.json()["reservation_id"] for r in rs]

    made = asyncio.run(burst())
    for direction in ("desc", "asc"):
        seen: list[str] = []
        created: list[int] = []
        params = {"limit": "200", "sort_by": "created_at_ms", "sort_dir": direction}
        while True:
            body = t.http.get("/v1/reservations", params=params).json()
            seen += [x["reservation_id"] for x in body["reservations"]]
            created += [x["created_at_ms"] for x in body["reservations"]]
            if not body["has_more"]:
                break
            params["cursor"] = body["next_cursor"]
        assert len(seen) == 260
        assert set(seen) == set(made)
        assert created == sorted(created, reverse=direction == "desc")


def test_window_offsets_survive_an_unencoded_plus(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    rid = t.reserve_ok(1)
    created = int(t.raw_reservation(rid)["created_at"])
    iso = dt.datetime.fromtimestamp(created / 1000, tz=dt.timezone.utc).isoformat()
    assert iso.endswith("+00:00")
    # A client that forgot to percent-encode "+" sends a space instead.
    raw = iso.replace("+", " ")
    r = t.http.get(f"/v1/reservations?from={raw}")
    assert r.status_code == 200, r.text
    assert [x["reservation_id"] for x in r.json()["reservations"]] == [rid]
