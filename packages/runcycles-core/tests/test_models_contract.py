"""Our wire models against the server's own contract (``GET /openapi.json`` of server-lite):
same properties, same required sets, same references, same enums - so the client and the
server cannot drift apart. The conformance session checks both against the upstream spec."""

from __future__ import annotations

import enum
import json
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from runcycles_core import models as m
from runcycles_server_lite.contract import OPERATIONS, openapi_document

DOC = openapi_document()
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]

# Contract schema name -> our model (the official SDK's name where it differs).
MODELS: dict[str, type[m.CyclesModel]] = {
    "CyclesEvidenceRef": m.CyclesEvidenceRef,
    "ReservationEvidence": m.ReservationEvidence,
    "ErrorResponse": m.ErrorResponse,
    "Amount": m.Amount,
    "SignedAmount": m.SignedAmount,
    "Subject": m.Subject,
    "Action": m.Action,
    "Caps": m.Caps,
    "DecisionRequest": m.DecisionRequest,
    "DecisionResponse": m.DecisionResponse,
    "ReservationCreateRequest": m.ReservationCreateRequest,
    "Balance": m.Balance,
    "ReservationCreateResponse": m.ReservationCreateResponse,
    "StandardMetrics": m.CyclesMetrics,
    "CommitRequest": m.CommitRequest,
    "CommitResponse": m.CommitResponse,
    "ReleaseRequest": m.ReleaseRequest,
    "ReleaseResponse": m.ReleaseResponse,
    "ReservationDetail": m.ReservationDetail,
    "BalanceResponse": m.BalanceResponse,
    "EventCreateRequest": m.EventCreateRequest,
    "EventCreateResponse": m.EventCreateResponse,
    "ReservationSummary": m.ReservationSummary,
    "ReservationListResponse": m.ReservationListResponse,
    "ReservationExtendRequest": m.ReservationExtendRequest,
    "ReservationExtendResponse": m.ReservationExtendResponse,
}
# Models of the evidence endpoints, which server-lite does not serve (so its contract has no
# schema for them; the conformance session checks them against the upstream spec).
NOT_SERVED = {m.CyclesEvidenceEnvelope, m.CyclesEvidenceJwks, m.CyclesEvidenceJwk}


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[1])
        for v in node.values():
            found |= _refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _refs(v)
    return found


def _runtime_schemas() -> set[str]:
    """Every schema reachable from the contract's runtime-plane operations."""
    todo = set().union(
        *(_refs(DOC["paths"][op.path][op.method]) for op in OPERATIONS if not op.admin_plane)
    )
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= _refs(SCHEMAS[name])
    return seen


def _wire_required(model: type[BaseModel]) -> set[str]:
    """Fields always present on the wire: required ones, plus those the model always fills
    (the generated idempotency key)."""
    return {
        name
        for name, info in model.model_fields.items()
        if info.is_required() or info.default_factory is not None
    }


def _classes_in(annotation: Any) -> set[type]:
    found: set[type] = set()
    if isinstance(annotation, type):
        found.add(annotation)
    origin = typing.get_origin(annotation)
    if isinstance(origin, type):
        found.add(origin)
    for arg in typing.get_args(annotation):
        found |= _classes_in(arg)
    return found


def _ref_name(prop: dict[str, Any]) -> str | None:
    ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _enum_of(prop: dict[str, Any]) -> list[Any] | None:
    node = prop.get("items") or prop
    if "const" in node:  # a one-value enum
        return [node["const"]]
    found = node.get("enum")
    return list(found) if found else None


def test_every_runtime_schema_of_the_contract_is_modelled() -> None:
    assert _runtime_schemas() == set(MODELS)
    modelled = {
        cls
        for cls in vars(m).values()
        if isinstance(cls, type) and issubclass(cls, m.CyclesModel) and cls is not m.CyclesModel
    }
    assert modelled - set(MODELS.values()) == NOT_SERVED


@pytest.mark.parametrize("schema_name", sorted(MODELS))
def test_properties_and_required_match(schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    model = MODELS[schema_name]
    assert set(model.model_fields) == set(schema["properties"]), schema_name
    assert _wire_required(model) == set(schema.get("required", [])), schema_name
    open_object = schema.get("additionalProperties") is not False
    assert model.model_config.get("extra") == ("allow" if open_object else "forbid")


@pytest.mark.parametrize("schema_name", sorted(MODELS))
def test_references_and_enums_point_at_the_matching_model(schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    fields: dict[str, FieldInfo] = MODELS[schema_name].model_fields
    for prop_name, prop in schema["properties"].items():
        where = f"{schema_name}.{prop_name}"
        classes = _classes_in(fields[prop_name].annotation)
        target = _ref_name(prop)
        if target is not None:
            assert MODELS[target] in classes, f"{where} should be {target}"
        values = _enum_of(prop)
        if values is not None and prop_name != "error":  # the error code is an open string
            enums = [c for c in classes if isinstance(c, type) and issubclass(c, enum.Enum)]
            assert len(enums) == 1, where
            assert [e.value for e in enums[0]] == values, where
        if prop.get("type") == "array":
            assert list in classes, f"{where} should be a list"
        if prop.get("type") == "integer":
            assert int in classes, where
            assert float not in classes, where


def test_error_codes_are_the_servers() -> None:
    served = SCHEMAS["ErrorResponse"]["properties"]["error"]["enum"]
    assert {c.value for c in m.ErrorCode} - {"UNKNOWN"} == set(served)


def test_operations_we_call_are_the_servers_plus_evidence() -> None:
    from runcycles_core import _http

    ours = {
        _http.RESERVATIONS_PATH,
        _http.RESERVATIONS_PATH + "/{reservation_id}",
        _http.RESERVATIONS_PATH + "/{reservation_id}/commit",
        _http.RESERVATIONS_PATH + "/{reservation_id}/release",
        _http.RESERVATIONS_PATH + "/{reservation_id}/extend",
        _http.DECIDE_PATH,
        _http.BALANCES_PATH,
        _http.EVENTS_PATH,
    }
    served = {op.path for op in OPERATIONS if not op.admin_plane}
    assert served == ours
    assert _http.EVIDENCE_PATH + "/{evidence_id}" not in served
    assert _http.JWKS_PATH not in served


def test_int64_amounts_stay_exact_integers() -> None:
    big = m.INT64_MAX
    amount = m.Amount(unit=m.Unit.USD_MICROCENTS, amount=big)
    assert amount.to_wire() == {"unit": "USD_MICROCENTS", "amount": big}
    with pytest.raises(ValidationError):
        m.Amount(unit=m.Unit.USD_MICROCENTS, amount=big + 1)
    with pytest.raises(ValidationError):
        m.Amount(unit=m.Unit.USD_MICROCENTS, amount=-1)
    for not_an_int in (1.0, "1", True):
        with pytest.raises(ValidationError):
            m.Amount.model_validate({"unit": "USD_MICROCENTS", "amount": not_an_int})
    assert m.SignedAmount(unit=m.Unit.TOKENS, amount=m.INT64_MIN).amount == m.INT64_MIN


def test_requests_are_strict_and_responses_forward_compatible() -> None:
    with pytest.raises(ValidationError):
        m.Action(kind="llm.completion", name="gpt", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        m.ReservationCreateRequest.model_validate(
            {
                "subject": {"tenant": "acme", "region": "eu"},
                "action": {"kind": "k", "name": "n"},
                "estimate": {"unit": "TOKENS", "amount": 1},
            }
        )
    parsed = m.ReservationCreateResponse.parse_response(
        {
            "decision": "ALLOW",
            "affected_scopes": ["tenant:acme"],
            "reservation_id": "r1",
            "future_field": {"x": 1},
            "reserved": {"unit": "TOKENS", "amount": 5, "precision": 2},
            "balances": [
                {
                    "scope": "tenant:acme",
                    "scope_path": "tenant:acme",
                    "remaining": {"unit": "TOKENS", "amount": -3},
                    "new_counter": 7,
                }
            ],
        }
    )
    assert parsed.reservation_id == "r1"
    assert parsed.reserved == m.Amount(unit=m.Unit.TOKENS, amount=5)
    assert parsed.balances is not None
    assert parsed.balances[0].remaining.amount == -3


def test_unknown_reason_codes_are_accepted() -> None:
    parsed = m.DecisionResponse.parse_response(
        {"decision": "DENY", "reason_code": "SOMETHING_NEW_IN_V2"}
    )
    assert parsed.reason_code == "SOMETHING_NEW_IN_V2"
    assert m.ErrorCode.from_string("SOMETHING_NEW_IN_V2") is m.ErrorCode.UNKNOWN


def test_subject_needs_a_standard_level() -> None:
    with pytest.raises(ValidationError):
        m.Subject(dimensions={"run_id": "r1"})
    with pytest.raises(ValidationError):
        m.Subject()
    assert m.Subject(tenant="acme", agent="bot").scope_path() == "tenant:acme/agent:bot"
    with pytest.raises(ValidationError):
        m.Subject(tenant="x" * 129)


def test_request_models_get_a_stable_generated_key() -> None:
    request = m.ReleaseRequest()
    first = request.to_wire()["idempotency_key"]
    assert first == request.to_wire()["idempotency_key"]
    assert 1 <= len(first) <= 256
    assert m.ReleaseRequest().idempotency_key != first
    with pytest.raises(ValidationError):
        m.ReleaseRequest(idempotency_key="")


_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=20)
_amounts = st.builds(m.Amount, unit=st.sampled_from(m.Unit), amount=st.integers(0, m.INT64_MAX))
_subjects = st.fixed_dictionaries(
    {"tenant": _label},
    optional=dict.fromkeys(m.Subject.LEVELS[1:], _label)
    | {"dimensions": st.dictionaries(_label, _label, max_size=3)},
).map(lambda d: m.Subject(**d))
_reservations = st.builds(
    m.ReservationCreateRequest,
    subject=_subjects,
    action=st.builds(
        m.Action, kind=_label, name=_label, tags=st.none() | st.lists(_label, max_size=10)
    ),
    estimate=_amounts,
    ttl_ms=st.none() | st.integers(1_000, 86_400_000),
    grace_period_ms=st.none() | st.integers(0, 60_000),
    overage_policy=st.none() | st.sampled_from(m.CommitOveragePolicy),
    dry_run=st.none() | st.booleans(),
    metadata=st.none() | st.dictionaries(_label, st.integers(m.INT64_MIN, m.INT64_MAX)),
)


@given(_reservations)
def test_requests_survive_json_exactly(request: m.ReservationCreateRequest) -> None:
    text = json.dumps(request.to_wire())
    assert m.ReservationCreateRequest.model_validate(json.loads(text)) == request


@given(st.integers(m.INT64_MIN, m.INT64_MAX), st.sampled_from(m.Unit))
def test_balances_parse_any_int64(amount: int, unit: m.Unit) -> None:
    body = json.dumps(
        {
            "scope": "tenant:a",
            "scope_path": "tenant:a",
            "remaining": {"unit": unit.value, "amount": amount},
        }
    )
    parsed = m.Balance.parse_response(json.loads(body))
    assert parsed.remaining.amount == amount


def test_open_evidence_objects_keep_unknown_fields() -> None:
    jwks = m.CyclesEvidenceJwks.parse_response(
        {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": "abc",
                    "kid": "k1",
                    "cycles_nbf_ms": 1,
                    "cycles_exp_ms": None,
                    "use": "sig",
                }
            ],
            "issuer": "srv",
        }
    )
    assert jwks.model_extra == {"issuer": "srv"}
    assert jwks.keys[0].model_extra == {"use": "sig"}
    assert jwks.keys[0].cycles_exp_ms is None


def test_equality_ignores_response_meta() -> None:
    parsed = m.Amount.parse_response({"unit": "TOKENS", "amount": 3})
    parsed._meta = m.ResponseMeta(status=200, request_id="r")
    assert parsed == m.Amount.tokens(3)
    assert parsed != m.Amount.tokens(4)
    assert parsed != m.SignedAmount(unit=m.Unit.TOKENS, amount=3)
