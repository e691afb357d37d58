"""runcycles-core's wire models against the upstream protocol spec: same properties, same
required sets, same references, same enums - so a spec change we have not followed fails here.
(The default tests check the same models against the server's own contract.)"""

from __future__ import annotations

import enum
import typing
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from upstream import RUNTIME_SPEC, load

from runcycles_core import models as m

SPEC = load(RUNTIME_SPEC)
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]

# Spec schema name -> our model (the official SDK's name where it differs).
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
    "CyclesEvidenceEnvelope": m.CyclesEvidenceEnvelope,
    "CyclesEvidenceJwks": m.CyclesEvidenceJwks,
    "CyclesEvidenceJwk": m.CyclesEvidenceJwk,
}

ENUMS: dict[str, type[enum.Enum]] = {
    "UnitEnum": m.Unit,
    "DecisionEnum": m.Decision,
    "CommitOveragePolicy": m.CommitOveragePolicy,
    "ReservationStatus": m.ReservationStatus,
    "SortDirection": m.SortDirection,
}


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


def test_every_object_schema_is_modelled_or_listed() -> None:
    objects = {name for name, s in SCHEMAS.items() if s.get("type") == "object"}
    assert objects == set(MODELS)


@pytest.mark.parametrize("schema_name", sorted(MODELS))
def test_properties_and_required_match(schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    model = MODELS[schema_name]
    assert set(model.model_fields) == set(schema["properties"]), schema_name
    assert _wire_required(model) == set(schema.get("required", [])), schema_name
    open_object = schema.get("additionalProperties") is True
    assert model.model_config.get("extra") == ("allow" if open_object else "forbid")


@pytest.mark.parametrize("schema_name", sorted(MODELS))
def test_references_point_at_the_matching_model(schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    fields: dict[str, FieldInfo] = MODELS[schema_name].model_fields
    for prop_name, prop in schema["properties"].items():
        target = _ref_name(prop)
        classes = _classes_in(fields[prop_name].annotation)
        if target in MODELS:
            assert MODELS[target] in classes, f"{schema_name}.{prop_name} should be {target}"
        elif target in ENUMS:
            assert ENUMS[target] in classes, f"{schema_name}.{prop_name} should be {target}"
        if prop.get("type") == "array" or (prop.get("items") is not None):
            assert list in classes, f"{schema_name}.{prop_name} should be a list"
        if prop.get("type") == "integer":
            assert int in classes, f"{schema_name}.{prop_name}"
            assert float not in classes, f"{schema_name}.{prop_name}"


@pytest.mark.parametrize(("schema_name", "enum_cls"), sorted(ENUMS.items()))
def test_enums_match(schema_name: str, enum_cls: type[enum.Enum]) -> None:
    assert [e.value for e in enum_cls] == SCHEMAS[schema_name]["enum"]


def test_error_codes_cover_the_spec() -> None:
    spec_codes = set(SCHEMAS["ErrorCode"]["enum"])
    ours = {c.value for c in m.ErrorCode} - {"UNKNOWN"}
    assert ours == spec_codes


def test_operations_of_the_spec_are_the_ones_we_call() -> None:
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
        _http.EVIDENCE_PATH + "/{evidence_id}",
        _http.JWKS_PATH,
    }
    assert set(SPEC["paths"]) == ours


def _spec_example(schema_name: str) -> dict[str, Any]:
    example = SCHEMAS[schema_name].get("example")
    assert isinstance(example, dict), f"{schema_name} has no example in the spec"
    return example


@pytest.mark.parametrize(
    "schema_name",
    [n for n in sorted(MODELS) if isinstance(SCHEMAS[n].get("example"), dict)],
)
def test_spec_examples_parse_and_round_trip(schema_name: str) -> None:
    example = _spec_example(schema_name)
    model = MODELS[schema_name]
    parsed = model.model_validate(example)
    assert parsed.to_wire() == example
