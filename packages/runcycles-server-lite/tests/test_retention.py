"""Finalized-reservation retention and idempotency lifetimes: the settings reach every key a
finalized reservation keeps, and replays inside the window answer exactly as before."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import pytest
from runtime_support import Tenant, key, make_tenant

from runcycles_server_lite import cli
from runcycles_server_lite.config import Settings
from runcycles_server_lite.sweeper import Sweeper
from runcycles_server_lite.testing import ServerHandle, running_server

DAY = 86_400_000
RETENTION = 2 * DAY
IDEMPOTENCY = DAY


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server keeping finalized reservations 2 days and idempotency records 1 day."""
    with running_server(
        tmp_path_factory.mktemp("retention"),
        finalized_retention_ms=RETENTION,
        idempotency_retention_ms=IDEMPOTENCY,
        sweep_interval_s=0.05,
    ) as srv:
        yield srv


@pytest.fixture
def tenant(tuned: ServerHandle) -> Iterator[Callable[..., Tenant]]:
    with contextlib.ExitStack() as stack:

        def make(budgets: dict[str, int], **kw: object) -> Tenant:
            return stack.enter_context(make_tenant(tuned, budgets, **kw))

        yield make


def _pttl(t: Tenant, name: Callable[..., str], *args: str) -> int:
    return int(t.server.run_store(lambda s: s.redis.pttl(name(s.keys)(t.name, *args))))


def _near(pttl: int, want: int) -> bool:
    # Set by the script a moment ago: at most the setting, and not much less.
    return want - 60_000 < pttl <= want


def test_commit_keeps_each_key_for_its_setting(tenant: Callable[..., Tenant]) -> None:
    t = tenant({"": 1000, "workspace:w": 500})
    rk, ck = key(), key()
    rid = t.reserve_ok(100, subject=t.subject(workspace="w", agent="a"), idempotency_key=rk)
    assert t.commit(rid, 60, idempotency_key=ck).status_code == 200
    assert _near(_pttl(t, lambda k: k.finalized, rid), RETENTION)
    assert _near(_pttl(t, lambda k: k.idempotency, "reserve", rk), IDEMPOTENCY)
    assert _near(_pttl(t, lambda k: k.idempotency, "commit", ck), IDEMPOTENCY)
    # The ACTIVE hash is gone: the finalized record replaced it.
    assert _pttl(t, lambda k: k.reservation, rid) == -2


def test_release_keeps_each_key_for_its_setting(tenant: Callable[..., Tenant]) -> None:
    t = tenant({"": 1000})
    rk, lk = key(), key()
    rid = t.reserve_ok(100, idempotency_key=rk)
    assert t.release(rid, idempotency_key=lk, reason="done").status_code == 200
    assert _near(_pttl(t, lambda k: k.finalized, rid), RETENTION)
    assert _near(_pttl(t, lambda k: k.idempotency, "reserve", rk), IDEMPOTENCY)
    assert _near(_pttl(t, lambda k: k.idempotency, "release", lk), IDEMPOTENCY)
    rec = t.raw_reservation(rid)
    assert (rec["status"], rec["release_reason"], rec["released_by"]) == (
        "RELEASED",
        "done",
        "tenant",
    )


def test_expiry_keeps_the_record_for_the_retention(tenant: Callable[..., Tenant]) -> None:
    t = tenant({"": 1000})
    rk = key()
    rid = t.reserve_ok(100, ttl_ms=1000, grace_period_ms=0, idempotency_key=rk)
    for _ in range(100):
        if t.raw_reservation(rid).get("status") == "EXPIRED":
            break
        time.sleep(0.05)
    assert t.raw_reservation(rid)["status"] == "EXPIRED"
    assert _near(_pttl(t, lambda k: k.finalized, rid), RETENTION)
    assert _near(_pttl(t, lambda k: k.idempotency, "reserve", rk), IDEMPOTENCY)


def test_replays_inside_the_window_answer_as_the_first_time(
    tenant: Callable[..., Tenant],
) -> None:
    t = tenant({"": 1000, "workspace:w": 500})
    rk, ck = key(), key()
    subject = t.subject(workspace="w", agent="a")
    first = t.reserve(100, subject=subject, idempotency_key=rk, metadata={"run": "x\ny"})
    assert first.status_code == 200
    rid = first.json()["reservation_id"]
    committed = t.commit(rid, 60, idempotency_key=ck, metadata={"k": "v"})
    assert committed.status_code == 200
    # Reserve replay: every field verbatim but remaining_ttl_ms, 0 once finalized.
    again = t.reserve(100, subject=subject, idempotency_key=rk, metadata={"run": "x\ny"})
    assert again.status_code == 200
    want = {**first.json(), "remaining_ttl_ms": 0}
    assert again.json() == want
    assert again.content.replace(b'"remaining_ttl_ms":0', b"") == first.content.replace(
        b'"remaining_ttl_ms":%d' % first.json()["remaining_ttl_ms"], b""
    )
    # Commit replay: the bytes of the first response.
    replay = t.commit(rid, 60, idempotency_key=ck, metadata={"k": "v"})
    assert (replay.status_code, replay.content) == (200, committed.content)
    # Same keys, different bodies.
    assert t.reserve(101, subject=subject, idempotency_key=rk).json()["error"] == (
        "IDEMPOTENCY_MISMATCH"
    )
    assert t.commit(rid, 61, idempotency_key=ck).json()["error"] == "IDEMPOTENCY_MISMATCH"
    # A new key on the finalized reservation.
    late = t.commit(rid, 60)
    assert (late.status_code, late.json()["error"]) == (409, "RESERVATION_FINALIZED")
    assert t.release(rid).json()["error"] == "RESERVATION_FINALIZED"
    # The finalized record still reads in full.
    got = t.http.get(f"/v1/reservations/{rid}").json()
    assert got["status"] == "COMMITTED"
    assert got["idempotency_key"] == rk
    assert got["committed"] == {"unit": "USD_MICROCENTS", "amount": 60}
    assert got["metadata"] == {"run": "x\ny"}
    assert got["committed_metadata"] == {"k": "v"}
    assert got["affected_scopes"] == [
        f"tenant:{t.name}",
        f"tenant:{t.name}/workspace:w",
        f"tenant:{t.name}/workspace:w/agent:a",
    ]
    listed = t.http.get("/v1/reservations", params={"idempotency_key": rk}).json()
    assert [r["reservation_id"] for r in listed["reservations"]] == [rid]


def test_client_strings_with_newlines_and_backslashes_survive(
    tenant: Callable[..., Tenant],
) -> None:
    t = tenant({"": 1000})
    rk, lk = "a\nb\\n\\", "c\n\\d"
    rid = t.reserve_ok(10, idempotency_key=rk)
    released = t.release(rid, idempotency_key=lk, reason="why\nnot \\n")
    assert released.status_code == 200
    assert t.release(rid, idempotency_key=lk, reason="why\nnot \\n").content == released.content
    got = t.http.get(f"/v1/reservations/{rid}").json()
    assert got["idempotency_key"] == rk
    assert t.raw_reservation(rid)["release_reason"] == "why\nnot \\n"


def test_records_go_when_the_retention_ends(tmp_path_factory: pytest.TempPathFactory) -> None:
    with (
        running_server(
            tmp_path_factory.mktemp("short"),
            finalized_retention_ms=800,
            idempotency_retention_ms=60_000,  # capped at the retention
            sweep_interval_s=3600.0,  # this test sweeps itself
        ) as srv,
        make_tenant(srv, {"": 1000}) as t,
    ):
        rk = key()
        rid = t.reserve_ok(10, idempotency_key=rk)
        assert t.commit(rid, 5).status_code == 200
        assert 0 < _pttl(t, lambda k: k.idempotency, "reserve", rk) <= 800
        time.sleep(1.0)
        # A fresh sweeper trims on its first pass: the index forgets the expired record.
        index = srv.run_store(lambda s: s.redis.zrange(s.keys.reservation_index(t.name), 0, -1))
        assert index == [rid]
        for _ in range(100):
            if srv.run_store(lambda s: Sweeper(s, srv.settings).sweep()).ran:
                break
            time.sleep(0.02)
        index = srv.run_store(lambda s: s.redis.zrange(s.keys.reservation_index(t.name), 0, -1))
        assert index == []
        gone = t.http.get(f"/v1/reservations/{rid}")
        assert (gone.status_code, gone.json()["error"]) == (404, "NOT_FOUND")
        assert _pttl(t, lambda k: k.finalized, rid) == -2
        assert t.http.get("/v1/reservations").json()["reservations"] == []


def test_settings_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCYCLES_")}
    monkeypatch.setattr(os, "environ", env)
    default = Settings()
    assert default.finalized_retention_ms == 30 * DAY
    assert default.idempotency_ms == 30 * DAY
    ns = cli.build_parser().parse_args(
        ["--finalized-retention-days", "7", "--idempotency-retention-days", "0.5"]
    )
    s = cli.settings_from_args(ns)
    assert (s.finalized_retention_ms, s.idempotency_retention_ms) == (7 * DAY, DAY // 2)
    # Worker processes rebuild the settings from the environment the CLI exports.
    cli._export(s)
    again = Settings.from_env()
    assert (again.finalized_retention_ms, again.idempotency_retention_ms) == (7 * DAY, DAY // 2)
    env["RUNCYCLES_IDEMPOTENCY_RETENTION_DAYS"] = "9"
    assert Settings.from_env().idempotency_ms == 7 * DAY  # never beyond the retention
    env["RUNCYCLES_FINALIZED_RETENTION_DAYS"] = "0"
    with pytest.raises(ValueError, match="positive"):
        Settings.from_env()


def test_extend_replays_inside_the_window(tenant: Callable[..., Tenant]) -> None:
    t = tenant({"": 1000, "workspace:w": 500})
    ek = key()
    rid = t.reserve_ok(100, subject=t.subject(workspace="w"), ttl_ms=60_000)
    first = t.extend(rid, 30_000, idempotency_key=ek)
    assert first.status_code == 200
    remaining = _pttl(t, lambda k: k.idempotency, f"extend:{rid}", ek)
    assert IDEMPOTENCY < remaining <= IDEMPOTENCY + 90_000 + 10_000  # + ttl left + grace
    assert t.commit(rid, 50).status_code == 200
    replay = t.extend(rid, 30_000, idempotency_key=ek)
    assert replay.json() == {**first.json(), "remaining_ttl_ms": 0}
    assert replay.json()["balances"][0]["scope"] == f"tenant:{t.name}"
    assert t.extend(rid, 30_001, idempotency_key=ek).json()["error"] == "IDEMPOTENCY_MISMATCH"
