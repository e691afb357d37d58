"""GET /metrics: Prometheus text that parses, counts what happened, and keeps labels bounded."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from runtime_support import TenantFactory, mk

from runcycles_server_lite.testing import ServerHandle, running_server

__all__ = ["mk"]

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(server: ServerHandle) -> tuple[Samples, str]:
    r = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    out: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out, r.text


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = tuple(sorted(labels.items()))
    return after[name].get(key, 0.0) - before[name].get(key, 0.0)


def test_metrics_count_requests_decisions_and_settlements(
    server: ServerHandle, mk: TenantFactory
) -> None:
    t = mk({"": 1000})
    before, _ = scrape(server)

    committed = t.reserve_ok(400)
    assert t.commit(committed, 300).status_code == 200
    released = t.reserve_ok(400)
    assert t.release(released).status_code == 200
    denied = t.reserve(900)  # 700 left
    assert denied.status_code == 409
    assert denied.json()["error"] == "BUDGET_EXCEEDED"
    dry = t.reserve(5000, dry_run=True)
    assert dry.status_code == 200 and dry.json()["decision"] == "DENY"
    assert t.decide(50).json()["decision"] == "ALLOW"
    assert t.http.get(f"/v1/reservations/{committed}").status_code == 200
    assert t.http.get("/no/such/path").status_code == 404

    after, text = scrape(server)

    def d(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    decisions = "cycles_decisions_total"
    assert d(decisions, operation="reserve", decision="ALLOW", reason_code="") == 2
    assert d(decisions, operation="decide", decision="ALLOW", reason_code="") == 1
    deny = {"operation": "reserve", "decision": "DENY"}
    dry_reason = dry.json().get("reason_code", "")
    live = d(decisions, **deny, reason_code="BUDGET_EXCEEDED")
    assert live == (2 if dry_reason == "BUDGET_EXCEEDED" else 1)
    assert d(decisions, **deny, reason_code=dry_reason) >= 1
    assert d("cycles_reservations_finalized_total", outcome="committed") == 1
    assert d("cycles_reservations_finalized_total", outcome="released") == 1

    req = "cycles_http_requests_total"
    assert d(req, route="/v1/reservations", method="POST", status="200") == 3
    assert d(req, route="/v1/reservations", method="POST", status="409") == 1
    one = "/v1/reservations/{reservation_id}"
    assert d(req, route=one, method="GET", status="200") == 1
    assert d(req, route="unmatched", method="GET", status="404") == 1
    timed = "cycles_http_request_duration_seconds_count"
    assert d(timed, route=f"{one}/commit", method="POST") == 1

    # Bounded labels: no reservation id, tenant or raw path ever becomes a label value.
    for rid in (committed, released):
        assert rid not in text
    assert t.name not in text
    assert "/no/such/path" not in text


def test_scope_gauges_follow_the_store(server: ServerHandle, mk: TenantFactory) -> None:
    t = mk({"": 1000, "workspace:w": 500})
    unit = {"unit": "USD_MICROCENTS"}
    before, _ = scrape(server)
    assert before["cycles_scopes"][tuple(unit.items())] >= 2

    t.set_budget("workspace:w", is_over_limit="true", debt="10")
    after, _ = scrape(server)
    assert delta(before, after, "cycles_scopes_over_limit", **unit) == 1
    assert delta(before, after, "cycles_scopes_in_debt", **unit) == 1

    t.set_budget("workspace:w", is_over_limit="false", debt="0")
    again, _ = scrape(server)
    assert delta(before, again, "cycles_scopes_over_limit", **unit) == 0
    assert delta(before, again, "cycles_scopes_in_debt", **unit) == 0


def test_a_metrics_token_guards_the_scrape(tmp_path: Path) -> None:
    with running_server(tmp_path, metrics_token="scrape-me") as srv:
        url = f"{srv.base_url}/metrics"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
            r = httpx.get(url, headers=headers, timeout=10)
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "UNAUTHORIZED"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "cycles_" not in r.text
        r = httpx.get(url, headers={"Authorization": "Bearer scrape-me"}, timeout=10)
        assert r.status_code == 200 and "cycles_http_requests_total" in r.text
        # Health stays open for probes.
        assert httpx.get(f"{srv.base_url}/actuator/health", timeout=10).status_code == 200
