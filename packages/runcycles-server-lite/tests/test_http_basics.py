from __future__ import annotations

import re

import httpx


def test_health_reports_redis_up(http: httpx.Client) -> None:
    r = http.get("/actuator/health")
    assert r.status_code == 200
    assert r.json()["components"]["redis"]["status"] == "UP"


def test_every_response_carries_request_and_trace_ids(http: httpx.Client) -> None:
    r = http.get("/no/such/path")
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "NOT_FOUND"
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-cycles-trace-id"])
    assert body["trace_id"] == r.headers["x-cycles-trace-id"]
    assert body["request_id"] == r.headers["x-request-id"]


def test_traceparent_wins_over_cycles_trace_header(http: httpx.Client) -> None:
    tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    r = http.get("/healthz", headers={"traceparent": tp, "X-Cycles-Trace-Id": "ef" * 16})
    assert r.headers["x-cycles-trace-id"] == "ab" * 16


def test_valid_cycles_trace_header_is_echoed(http: httpx.Client) -> None:
    r = http.get("/healthz", headers={"X-Cycles-Trace-Id": "ef" * 16})
    assert r.headers["x-cycles-trace-id"] == "ef" * 16


def test_malformed_trace_headers_are_ignored_not_rejected(http: httpx.Client) -> None:
    r = http.get(
        "/healthz",
        headers={
            "traceparent": "00-" + "0" * 32 + "-" + "cd" * 8 + "-01",
            "X-Cycles-Trace-Id": "XYZ",
        },
    )
    assert r.status_code == 200
    tid = r.headers["x-cycles-trace-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", tid)
    assert tid not in ("0" * 32, "XYZ")


def test_provisioned_key_reaches_auth(server, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    from runcycles_server_lite import provisioning as prov

    secret = server.provision("acme-basics", {"": 1000, "workspace:prod": 500})
    budget = server.run_store(
        lambda s: prov.get_budget(
            s, "acme-basics", "tenant:acme-basics/workspace:prod", "USD_MICROCENTS"
        )
    )
    assert budget is not None
    assert budget["remaining"] == "500"
    assert secret.startswith("cyc_live_")


def test_runtime_routes_are_matched_first(server) -> None:  # type: ignore[no-untyped-def]
    from runcycles_server_lite import create_app

    app = create_app(server.settings)
    first = [getattr(r, "path", "") for r in app.routes[:3]]
    assert all(p.startswith("/v1/") and not p.startswith("/v1/admin") for p in first), first


def test_proxy_headers_are_opt_in() -> None:
    from runcycles_server_lite.cli import build_parser, settings_from_args

    assert settings_from_args(build_parser().parse_args([])).proxy_headers is False
    assert settings_from_args(build_parser().parse_args(["--proxy-headers"])).proxy_headers is True
