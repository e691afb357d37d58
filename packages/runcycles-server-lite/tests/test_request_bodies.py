"""Hostile request bodies over real HTTP: deep nesting, oversize, wrong media type."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from runtime_support import ACTION, TenantFactory, amount, key, mk, short

from runcycles_server_lite._body import MAX_JSON_DEPTH, too_deep

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
