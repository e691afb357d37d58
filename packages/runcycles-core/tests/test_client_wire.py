"""Wire shapes: the exact method, path, query, JSON body and headers each operation sends, and
the typed response it returns. Every case runs against the sync and the async client."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

import runcycles_core as rc

from .conftest import API_KEY, Recorder, error_body, make_config

SUBJECT = {"tenant": "acme", "workspace": "prod", "agent": "bot"}
ACTION = {"kind": "llm.completion", "name": "openai:gpt-4o", "tags": ["chat"]}
BALANCE = {
    "scope": "tenant:acme",
    "scope_path": "tenant:acme",
    "remaining": {"unit": "USD_MICROCENTS", "amount": 9_000},
    "reserved": {"unit": "USD_MICROCENTS", "amount": 1_000},
    "is_over_limit": False,
}
DETAIL = {
    "reservation_id": "r/1",
    "status": "ACTIVE",
    "subject": SUBJECT,
    "action": ACTION,
    "reserved": {"unit": "USD_MICROCENTS", "amount": 5_000},
    "created_at_ms": 1_700_000_000_000,
    "expires_at_ms": 1_700_000_060_000,
    "scope_path": "tenant:acme/workspace:prod/agent:bot",
    "affected_scopes": ["tenant:acme", "tenant:acme/workspace:prod"],
}


@dataclass
class Op:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    method: str
    path: str
    status: int
    response: dict[str, Any]
    model: type[rc.CyclesModel]
    body: dict[str, Any] | None = None
    params: dict[str, str] = field(default_factory=dict)


OPS = [
    Op(
        "create_reservation",
        (
            rc.ReservationCreateRequest(
                idempotency_key="key-reserve",
                subject=rc.Subject(**SUBJECT),
                action=rc.Action(**ACTION),
                estimate=rc.Amount.usd_microcents(5_000),
                ttl_ms=30_000,
                grace_period_ms=2_000,
                overage_policy=rc.CommitOveragePolicy.REJECT,
                metadata={"run": "r-9", "big": 2**62},
            ),
        ),
        {},
        "POST",
        "/v1/reservations",
        200,
        {
            "decision": "ALLOW",
            "reservation_id": "r-1",
            "affected_scopes": ["tenant:acme"],
            "reserved": {"unit": "USD_MICROCENTS", "amount": 5_000},
            "expires_at_ms": 1_700_000_030_000,
            "remaining_ttl_ms": 30_000,
            "balances": [BALANCE],
        },
        rc.ReservationCreateResponse,
        body={
            "idempotency_key": "key-reserve",
            "subject": SUBJECT,
            "action": ACTION,
            "estimate": {"unit": "USD_MICROCENTS", "amount": 5_000},
            "ttl_ms": 30_000,
            "grace_period_ms": 2_000,
            "overage_policy": "REJECT",
            "metadata": {"run": "r-9", "big": 2**62},
        },
    ),
    Op(
        "commit_reservation",
        ("r-1",),
        {
            "idempotency_key": "key-commit",
            "actual": {"unit": "USD_MICROCENTS", "amount": 4_200},
            "metrics": {"tokens_input": 10, "tokens_output": 20, "model_version": "gpt-4o-2024"},
        },
        "POST",
        "/v1/reservations/r-1/commit",
        200,
        {
            "status": "COMMITTED",
            "charged": {"unit": "USD_MICROCENTS", "amount": 4_200},
            "released": {"unit": "USD_MICROCENTS", "amount": 800},
        },
        rc.CommitResponse,
        body={
            "idempotency_key": "key-commit",
            "actual": {"unit": "USD_MICROCENTS", "amount": 4_200},
            "metrics": {"tokens_input": 10, "tokens_output": 20, "model_version": "gpt-4o-2024"},
        },
    ),
    Op(
        "release_reservation",
        ("r-1",),
        {"idempotency_key": "key-release", "reason": "cancelled"},
        "POST",
        "/v1/reservations/r-1/release",
        200,
        {"status": "RELEASED", "released": {"unit": "USD_MICROCENTS", "amount": 5_000}},
        rc.ReleaseResponse,
        body={"idempotency_key": "key-release", "reason": "cancelled"},
    ),
    Op(
        "extend_reservation",
        ("r-1",),
        {"idempotency_key": "key-extend", "extend_by_ms": 10_000},
        "POST",
        "/v1/reservations/r-1/extend",
        200,
        {"status": "ACTIVE", "expires_at_ms": 1_700_000_040_000, "remaining_ttl_ms": 9_000},
        rc.ReservationExtendResponse,
        body={"idempotency_key": "key-extend", "extend_by_ms": 10_000},
    ),
    Op(
        "get_reservation",
        ("r/1",),
        {},
        "GET",
        "/v1/reservations/r%2F1",
        200,
        DETAIL,
        rc.ReservationDetail,
    ),
    Op(
        "list_reservations",
        (),
        {
            "status": rc.ReservationStatus.ACTIVE,
            "workspace": "prod",
            "from_": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            "include": ["metadata", "evidence"],
            "sort_by": "created_at_ms",
            "sort_dir": "asc",
            "limit": 10,
        },
        "GET",
        "/v1/reservations",
        200,
        {"reservations": [DETAIL], "has_more": False},
        rc.ReservationListResponse,
        params={
            "status": "ACTIVE",
            "workspace": "prod",
            "from": "2026-01-02T03:04:05Z",
            "include": "metadata,evidence",
            "sort_by": "created_at_ms",
            "sort_dir": "asc",
            "limit": "10",
        },
    ),
    Op(
        "decide",
        (),
        {
            "idempotency_key": "key-decide",
            "subject": SUBJECT,
            "action": ACTION,
            "estimate": {"unit": "TOKENS", "amount": 1_000},
        },
        "POST",
        "/v1/decide",
        200,
        {
            "decision": "ALLOW_WITH_CAPS",
            "caps": {"max_tokens": 500, "tool_denylist": ["shell"]},
            "affected_scopes": ["tenant:acme"],
        },
        rc.DecisionResponse,
        body={
            "idempotency_key": "key-decide",
            "subject": SUBJECT,
            "action": ACTION,
            "estimate": {"unit": "TOKENS", "amount": 1_000},
        },
    ),
    Op(
        "get_balances",
        (),
        {"workspace": "prod", "include_children": True, "limit": 5},
        "GET",
        "/v1/balances",
        200,
        {"balances": [BALANCE], "has_more": False},
        rc.BalanceResponse,
        params={"workspace": "prod", "include_children": "true", "limit": "5"},
    ),
    Op(
        "create_event",
        (),
        {
            "idempotency_key": "key-event",
            "subject": SUBJECT,
            "action": ACTION,
            "actual": {"unit": "USD_MICROCENTS", "amount": 77},
            "overage_policy": "ALLOW_WITH_OVERDRAFT",
            "client_time_ms": 1_700_000_000_000,
        },
        "POST",
        "/v1/events",
        201,
        {"status": "APPLIED", "event_id": "ev-1"},
        rc.EventCreateResponse,
        body={
            "idempotency_key": "key-event",
            "subject": SUBJECT,
            "action": ACTION,
            "actual": {"unit": "USD_MICROCENTS", "amount": 77},
            "overage_policy": "ALLOW_WITH_OVERDRAFT",
            "client_time_ms": 1_700_000_000_000,
        },
    ),
]

TRACE_RE = re.compile(r"^[0-9a-f]{32}$")


def _check_request(recorder: Recorder, op: Op) -> None:
    assert len(recorder.requests) == 1
    req = recorder.last
    assert req.method == op.method
    assert req.url.raw_path.decode().split("?")[0] == op.path
    assert dict(req.url.params) == op.params
    assert req.headers["X-Cycles-API-Key"] == API_KEY
    assert req.headers["User-Agent"].startswith("runcycles-core/")
    assert TRACE_RE.match(req.headers["X-Cycles-Trace-Id"])
    if op.body is None:
        assert req.content == b""
        assert "X-Idempotency-Key" not in req.headers
    else:
        assert recorder.body() == op.body
        assert req.headers["Content-Type"] == "application/json"
        assert req.headers["X-Idempotency-Key"] == op.body["idempotency_key"]


def _check_response(result: Any, op: Op) -> None:
    assert type(result) is op.model
    assert result.to_wire() == op.response
    assert result.meta is not None
    assert result.meta.status == op.status
    assert result.meta.request_id == "req-42"
    assert result.meta.attempts == 1


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_sync_wire_shape(recorder: Recorder, op: Op) -> None:
    recorder.reply(op.status, op.response, headers={"X-Request-Id": "req-42"})
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        result = getattr(client, op.name)(*op.args, **op.kwargs)
    _check_request(recorder, op)
    _check_response(result, op)


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
async def test_async_wire_shape(recorder: Recorder, op: Op) -> None:
    recorder.reply(op.status, op.response, headers={"X-Request-Id": "req-42"})
    async with rc.AsyncCyclesClient(make_config(), transport=recorder.async_transport()) as client:
        result = await getattr(client, op.name)(*op.args, **op.kwargs)
    _check_request(recorder, op)
    _check_response(result, op)


def _allow() -> dict[str, Any]:
    return {"decision": "ALLOW", "reservation_id": "r-1", "affected_scopes": ["tenant:acme"]}


def test_default_subject_and_generated_key(recorder: Recorder) -> None:
    recorder.reply(200, _allow())
    config = make_config(tenant="acme", agent="bot")
    with rc.CyclesClient(config, transport=recorder.sync_transport()) as client:
        client.create_reservation(action=ACTION, estimate={"unit": "TOKENS", "amount": 3})
    body = recorder.body()
    assert body["subject"] == {"tenant": "acme", "agent": "bot"}
    key = body["idempotency_key"]
    assert re.match(r"^[0-9a-f-]{36}$", key)
    assert recorder.last.headers["X-Idempotency-Key"] == key


def test_same_model_reuses_its_key(recorder: Recorder) -> None:
    recorder.reply(200, {"status": "RELEASED", "released": {"unit": "TOKENS", "amount": 1}})
    recorder.reply(200, {"status": "RELEASED", "released": {"unit": "TOKENS", "amount": 1}})
    request = rc.ReleaseRequest(reason="retry by caller")
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        client.release_reservation("r-1", request)
        client.release_reservation("r-1", request)
    assert recorder.body(0)["idempotency_key"] == recorder.body(1)["idempotency_key"]
    assert recorder.body(0)["idempotency_key"] == request.idempotency_key


def test_each_call_without_a_key_gets_a_fresh_one(recorder: Recorder) -> None:
    for _ in range(2):
        recorder.reply(200, {"status": "RELEASED", "released": {"unit": "TOKENS", "amount": 1}})
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        client.release_reservation("r-1")
        client.release_reservation("r-1")
    assert recorder.body(0)["idempotency_key"] != recorder.body(1)["idempotency_key"]


def test_requests_are_validated_before_anything_is_sent(recorder: Recorder) -> None:
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        with pytest.raises(ValidationError):
            client.create_reservation(
                action=ACTION, estimate={"unit": "TOKENS", "amount": 1}, surprise=True
            )
        with pytest.raises(ValidationError):
            client.commit_reservation("r-1", actual={"unit": "TOKENS", "amount": 1.5})
        with pytest.raises(ValidationError):
            client.extend_reservation("r-1", extend_by_ms=0)
        with pytest.raises(TypeError):
            client.release_reservation("r-1", rc.ReleaseRequest(), reason="both")
        with pytest.raises(ValueError, match="reservation_id"):
            client.get_reservation("")
    assert recorder.requests == []


def test_no_subject_anywhere_is_an_error(recorder: Recorder) -> None:
    config = make_config(tenant=None)
    with rc.CyclesClient(config, transport=recorder.sync_transport()) as client:
        with pytest.raises(ValueError, match="subject"):
            client.decide(action=ACTION, estimate={"unit": "TOKENS", "amount": 1})
        with pytest.raises(ValueError, match="subject filter"):
            client.get_balances()
    assert recorder.requests == []


def test_balances_default_to_the_configured_tenant(recorder: Recorder) -> None:
    recorder.reply(200, {"balances": []})
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        assert client.get_balances().balances == []
    assert dict(recorder.last.url.params) == {"tenant": "acme"}


def test_dry_run_deny_is_a_result_not_an_error(recorder: Recorder) -> None:
    recorder.reply(
        200,
        {"decision": "DENY", "affected_scopes": ["tenant:acme"], "reason_code": "BUDGET_EXCEEDED"},
    )
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        result = client.create_reservation(
            action=ACTION, estimate={"unit": "TOKENS", "amount": 1}, dry_run=True
        )
    assert result.is_denied()
    assert result.reason_code == "BUDGET_EXCEEDED"
    assert recorder.body()["dry_run"] is True


def test_response_meta_reads_protocol_headers(recorder: Recorder) -> None:
    recorder.reply(
        200,
        {"decision": "ALLOW"},
        headers={
            "X-Request-Id": "req-7",
            "X-Cycles-Trace-Id": "12" * 16,
            "X-Cycles-Tenant": "acme",
            "X-RateLimit-Remaining": "99",
            "X-RateLimit-Reset": "1700000000",
        },
    )
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        result = client.decide(action=ACTION, estimate={"unit": "TOKENS", "amount": 1})
    assert result.meta == rc.ResponseMeta(
        status=200,
        request_id="req-7",
        trace_id="12" * 16,
        tenant="acme",
        rate_limit_remaining=99,
        rate_limit_reset=1_700_000_000,
        attempts=1,
    )


def test_config_headers_and_timeouts_reach_httpx(recorder: Recorder) -> None:
    recorder.reply(200, {"balances": []})
    config = make_config(
        user_agent="my-agent/1.0", extra_headers={"X-Extra": "yes"}, read_timeout=7.5
    )
    with rc.CyclesClient(config, transport=recorder.sync_transport()) as client:
        client.get_balances(tenant="acme")
    req = recorder.last
    assert req.headers["User-Agent"] == "my-agent/1.0"
    assert req.headers["X-Extra"] == "yes"
    assert req.extensions["timeout"]["read"] == 7.5
    assert req.extensions["timeout"]["connect"] == 2.0


def test_client_defaults_to_config_from_env(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CYCLES_BASE_URL", "http://from-env.test/")
    monkeypatch.setenv("CYCLES_API_KEY", "env-key")
    monkeypatch.setenv("CYCLES_TENANT", "envco")
    recorder.reply(200, {"balances": []})
    with rc.CyclesClient(transport=recorder.sync_transport()) as client:
        client.get_balances()
    assert str(recorder.last.url) == "http://from-env.test/v1/balances?tenant=envco"
    assert recorder.last.headers["X-Cycles-API-Key"] == "env-key"


def test_one_pooled_client_for_many_calls() -> None:
    connections: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        connections.append(id(request))
        return httpx.Response(200, json={"balances": []})

    with rc.CyclesClient(make_config(), transport=httpx.MockTransport(handler)) as client:
        pool = client._http
        for _ in range(3):
            client.get_balances(tenant="acme")
        assert client._http is pool
    assert len(connections) == 3
    assert pool.is_closed


def test_with_options_shares_the_pool_with_other_settings(recorder: Recorder) -> None:
    recorder.reply(502, {"error": "INTERNAL_ERROR"})
    recorder.reply(200, {"balances": []})
    config = make_config(retry_max_attempts=3)
    with rc.CyclesClient(config, transport=recorder.sync_transport()) as client:
        view = client.with_options(retry_enabled=False, read_timeout=0.75)
        assert view._http is client._http
        with pytest.raises(rc.CyclesUnavailableError) as info:
            view.get_balances()
        assert info.value.attempts == 1
        assert recorder.last.extensions["timeout"]["read"] == 0.75
        view.close()
        assert not client._http.is_closed
        client.get_balances()
        assert recorder.last.extensions["timeout"]["read"] == 5.0
        with pytest.raises(ValueError, match="base_url"):
            client.with_options(base_url="http://elsewhere")
    assert client.config.retry_enabled is True


async def test_async_with_options_shares_the_pool(recorder: Recorder) -> None:
    recorder.reply(200, {"balances": []})
    async with rc.AsyncCyclesClient(make_config(), transport=recorder.async_transport()) as client:
        view = client.with_options(tenant="other", pool_timeout=1.0)
        await view.get_balances()
        await view.aclose()
        assert not client._http.is_closed
    assert dict(recorder.last.url.params) == {"tenant": "other"}
    assert recorder.last.extensions["timeout"]["pool"] == 1.0
    assert client._http.is_closed


ENVELOPE = {
    "schema_version": "cycles-evidence/v0.1",
    "artifact_type": "commit",
    "server_id": "https://cycles.example/v1",
    "signer_did": "did:web:cycles.example",
    "issued_at_ms": 1_700_000_000_000,
    "payload": {"reservation_id": "r-1", "charged": {"unit": "TOKENS", "amount": 3}},
    "evidence_id": "e" * 64,
    "signature": "5" * 128,
    "future": "kept",
}


def test_evidence_endpoints(recorder: Recorder) -> None:
    recorder.reply(200, ENVELOPE)
    recorder.reply(
        200,
        {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "k1", "cycles_nbf_ms": 0}]},
    )
    with rc.CyclesClient(make_config(), transport=recorder.sync_transport()) as client:
        envelope = client.get_evidence("e" * 64)
        jwks = client.get_evidence_jwks()
        with pytest.raises(ValueError, match="evidence_id"):
            client.get_evidence("not-hex")
    assert envelope.artifact_type == "commit"
    assert envelope.model_extra == {"future": "kept"}
    assert jwks.keys[0].kid == "k1"
    paths = [r.url.path for r in recorder.requests]
    assert paths == [f"/v1/evidence/{'e' * 64}", "/v1/.well-known/cycles-jwks.json"]


async def test_async_evidence_endpoints(recorder: Recorder) -> None:
    recorder.reply(404, error_body("NOT_FOUND"))
    recorder.reply(200, {"keys": []})
    async with rc.AsyncCyclesClient(make_config(), transport=recorder.async_transport()) as client:
        with pytest.raises(rc.NotFoundError):
            await client.get_evidence("a" * 64)
        assert (await client.get_evidence_jwks()).keys == []
