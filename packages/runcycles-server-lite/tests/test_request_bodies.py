"""Hostile request bodies over real HTTP: deep nesting, oversize, wrong media type."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from runtime_support import ACTION, UNIT, Tenant, TenantFactory, amount, key, mk, short

from runcycles_server_lite._body import MAX_JSON_DEPTH, too_deep
from runcycles_server_lite.cli import build_parser, settings_from_args
from runcycles_server_lite.config import DEFAULT_MAX_BODY_BYTES, Settings
from runcycles_server_lite.testing import ServerHandle, running_server, start_timeout

__all__ = ["mk"]


def nested(levels: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def assert_protocol_error(r: httpx.Response, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == "INVALID_REQUEST"
    assert needle in body["message"], body["message"]
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["trace_id"] == r.headers["x-cycles-trace-id"]


@pytest.mark.parametrize("endpoint", ["reserve", "decide", "event", "commit"])
def test_deeply_nested_metadata_is_a_400_not_a_500(mk: TenantFactory, endpoint: str) -> None:
    t = mk({"": 1000})
    deep = {"metadata": nested(253)}
    if endpoint == "reserve":
        r = t.reserve(10, **deep)
    elif endpoint == "decide":
        r = t.decide(10, **deep)
    elif endpoint == "event":
        r = t.event(10, **deep)
    else:
        rid = t.reserve_ok(10)
        r = t.commit(rid, 5, **deep)
    assert len(r.request.content) < 4096  # a small body, not a big one
    assert_protocol_error(r, 400, f"deeper than {MAX_JSON_DEPTH} levels")
    assert r.json()["details"] == {"max_depth": MAX_JSON_DEPTH}
    expected = (990, 10, 0, 0) if endpoint == "commit" else (1000, 0, 0, 0)
    assert short(t.ledger(), t.name) == {"": expected}


def test_nesting_up_to_the_limit_is_accepted(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    # The request object is depth 1 and "metadata" adds one more level per nested object.
    r = t.reserve(10, metadata=nested(MAX_JSON_DEPTH - 1))
    assert r.status_code == 200, r.text
    r = t.reserve(10, metadata=nested(MAX_JSON_DEPTH))
    assert_protocol_error(r, 400, "deeper than")


def test_deep_arrays_are_rejected_on_the_admin_plane_too(server, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    body: Any = []
    for _ in range(300):
        body = [body]
    r = http.post(
        "/v1/admin/tenants",
        json={"tenant_id": "deep-x", "name": body},
        headers=server.admin_headers,
    )
    assert_protocol_error(r, 400, "deeper than")


def test_too_deep_counts_levels() -> None:
    assert not too_deep(nested(5), 5)
    assert too_deep(nested(6), 5)
    assert not too_deep([[], {"a": [1, 2]}], 3)
    assert too_deep([[], {"a": [[1]]}], 3)
    assert not too_deep(ACTION | {"x": amount(1), "k": key()}, 2)


def raw_exchange(base_url: str, head: bytes, body: bytes) -> tuple[int, bytes]:
    """Send ``head`` and ``body`` on a raw socket (nothing more, however much the head
    announces) and return the (status, body) of the server's answer."""
    host, port = base_url.removeprefix("http://").split(":")
    response = b""
    with socket.create_connection((host, int(port)), timeout=start_timeout(10)) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(head + body)
        with contextlib.suppress(ConnectionError):
            while data := sock.recv(65536):
                response += data
                head_end = response.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = re.search(rb"(?i)content-length: *(\d+)", response[:head_end])
                    if length and len(response) >= head_end + 4 + int(length.group(1)):
                        break
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def post_head(path: str, secret: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nX-Cycles-API-Key: {secret}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def test_declared_100_mb_body_is_refused_without_reading_it(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    head = post_head("/v1/reservations", t.secret, f"Content-Length: {100 * 1024 * 1024}\r\n")
    # Only 64 KiB of the announced 100 MiB are sent: a server reading the whole body before
    # answering would wait for the rest (and time the test out).
    status, body = raw_exchange(t.server.base_url, head, b" " * 65536)
    assert status == 413
    err = orjson.loads(body)
    assert err["error"] == "INVALID_REQUEST"
    assert err["details"] == {"max_body_bytes": DEFAULT_MAX_BODY_BYTES}


def test_chunked_body_is_cut_off_once_over_the_limit(mk: TenantFactory) -> None:
    t = mk({"": 1000})
    head = post_head("/v1/reservations", t.secret, "Transfer-Encoding: chunked\r\n")
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # Just over the limit and never the terminating chunk: only a server that stops reading at
    # the limit can answer.
    count = DEFAULT_MAX_BODY_BYTES // len(piece) + 2
    status, body = raw_exchange(t.server.base_url, head, chunk * count)
    assert status == 413
    assert "exceeds" in orjson.loads(body)["message"]
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}


def test_body_limit_is_configurable(tmp_path: Path) -> None:
    with running_server(tmp_path, max_body_bytes=2048) as srv:
        secret = srv.provision("small-bodies", {"": 1000})
        with httpx.Client(
            base_url=srv.base_url, headers={"X-Cycles-API-Key": secret}, timeout=10
        ) as client:
            body = {
                "idempotency_key": key(),
                "subject": {"tenant": "small-bodies"},
                "action": ACTION,
                "estimate": amount(1),
            }
            assert client.post("/v1/reservations", json=body).status_code == 200
            big = {**body, "idempotency_key": key(), "metadata": {"pad": "p" * 3000}}
            r = client.post("/v1/reservations", json=big)
            assert_protocol_error(r, 413, "exceeds 2048 bytes")


def test_body_limit_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_args(build_parser().parse_args([])).max_body_bytes == (
        DEFAULT_MAX_BODY_BYTES
    )
    args = build_parser().parse_args(["--max-body-bytes", "4096"])
    assert settings_from_args(args).max_body_bytes == 4096
    monkeypatch.setenv("RUNCYCLES_MAX_BODY_BYTES", "8192")
    assert Settings.from_env().max_body_bytes == 8192


def reserve_body(t: Tenant) -> bytes:
    return orjson.dumps(
        {"idempotency_key": key(), "subject": t.subject(), "action": ACTION, "estimate": amount(1)}
    )


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "application/jsonx",
        "text/json",
    ],
)
def test_non_json_content_types_get_a_415(mk: TenantFactory, content_type: str | None) -> None:
    t = mk({"": 1000})
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = t.http.post("/v1/reservations", content=reserve_body(t), headers=headers)
    assert_protocol_error(r, 415, "Content-Type must be application/json")
    assert r.json()["details"] == {"content_type": content_type or ""}
    assert short(t.ledger(), t.name) == {"": (1000, 0, 0, 0)}


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
def test_a_missing_body_is_a_400_whatever_the_content_type(
    mk: TenantFactory, content_type: str | None
) -> None:
    # The protocol documents 400 for it (schemathesis sends such requests); 415 is only for a
    # body that is there and not JSON.
    t = mk({"": 1000})
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = t.http.post("/v1/decide", headers=headers)
    assert r.status_code == (415 if content_type == "text/plain" else 400), r.text
    assert r.json()["error"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/vnd.cycles+json",
        'application/merge-patch+json; charset="utf-8"',
    ],
)
def test_json_content_types_are_accepted(mk: TenantFactory, content_type: str) -> None:
    t = mk({"": 1000})
    r = t.http.post(
        "/v1/reservations", content=reserve_body(t), headers={"Content-Type": content_type}
    )
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "ALLOW"


def test_admin_plane_checks_content_type_but_bodiless_freeze_still_works(
    server: ServerHandle, mk: TenantFactory
) -> None:
    t = mk({"": 1000})
    with server.admin_client() as admin:
        r = admin.post(
            "/v1/admin/tenants",
            content=b'{"tenant_id": "ct-x", "name": "x"}',
            headers={"Content-Type": "text/plain"},
        )
        assert_protocol_error(r, 415, "Content-Type")
        params = {"scope": f"tenant:{t.name}", "unit": UNIT}
        r = admin.post("/v1/admin/budgets/freeze", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "FROZEN"


def test_client_disconnect_mid_body_is_logged_at_debug_not_error(
    mk: TenantFactory, caplog: pytest.LogCaptureFixture
) -> None:
    t = mk({"": 1000})
    host, port = t.server.base_url.removeprefix("http://").split(":")
    caplog.set_level(logging.DEBUG, logger="runcycles_server_lite")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(post_head("/v1/reservations", t.secret, "Content-Length: 5000\r\n"))
        sock.sendall(b'{"idempotency_key": "')  # then hang up mid-body
    deadline = time.monotonic() + start_timeout(10)
    while time.monotonic() < deadline:
        if any("disconnected" in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.02)
    ours = [r for r in caplog.records if r.name.startswith("runcycles_server_lite")]
    assert [r for r in ours if r.levelno >= logging.WARNING] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    debug = [r for r in ours if "disconnected" in r.getMessage()]
    assert debug and debug[0].levelno == logging.DEBUG
    assert debug[0].exc_info is None  # no traceback
    assert t.http.get("/healthz").status_code == 200
