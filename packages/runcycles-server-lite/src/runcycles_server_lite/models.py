"""Runtime request models (Cycles Protocol v0), validated strictly.

Every model forbids unknown fields and takes integers strictly (a JSON ``true``, ``1.0`` or
``"1"`` is not an amount). Optional fields whose default depends on the tenant (``ttl_ms``,
``overage_policy``) stay ``None`` when absent, so tenant defaults are never masked.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)

from .errors import ProtocolError, invalid
from .keys import SUBJECT_LEVELS

INT64_MAX = 2**63 - 1
# Bumped whenever the canonical request form changes, so stored hashes of an older format
# are never compared against new ones as if they were the same request.
HASH_FORMAT = "v1"

Unit = Literal["USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS"]
OveragePolicy = Literal["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"]
SubjectValue = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.-]+$")]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=256)]
NonNegInt = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Amount(_Strict):
    unit: Unit
    amount: NonNegInt


class Subject(_Strict):
    tenant: SubjectValue | None = None
    workspace: SubjectValue | None = None
    app: SubjectValue | None = None
    workflow: SubjectValue | None = None
    agent: SubjectValue | None = None
    toolset: SubjectValue | None = None
    dimensions: (
        Annotated[dict[str, Annotated[str, Field(max_length=256)]], Field(max_length=16)] | None
    ) = None

    @model_validator(mode="after")
    def _one_standard_field(self) -> Subject:
        if all(getattr(self, level) is None for level in SUBJECT_LEVELS):
            raise ValueError(
                "subject needs at least one of tenant, workspace, app, workflow, agent, toolset"
            )
        return self

    def levels(self) -> list[tuple[str, str]]:
        """The present standard fields in canonical order, values lowercased."""
        out = []
        for level in SUBJECT_LEVELS:
            value = getattr(self, level)
            if value is not None:
                out.append((level, value.lower()))
        return out


class Action(_Strict):
    kind: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(min_length=1, max_length=256)]
    tags: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=10)] | None = None


class StandardMetrics(_Strict):
    tokens_input: NonNegInt | None = None
    tokens_output: NonNegInt | None = None
    latency_ms: NonNegInt | None = None
    model_version: Annotated[str, Field(max_length=128)] | None = None
    custom: dict[str, Any] | None = None


class ReservationCreateRequest(_Strict):
    idempotency_key: IdempotencyKey
    subject: Subject
    action: Action
    estimate: Amount
    ttl_ms: Annotated[StrictInt, Field(ge=1000, le=86_400_000)] | None = None
    grace_period_ms: Annotated[StrictInt, Field(ge=0, le=60_000)] = 5000
    overage_policy: OveragePolicy | None = None
    dry_run: StrictBool = False
    metadata: dict[str, Any] | None = None


class DecisionRequest(_Strict):
    idempotency_key: IdempotencyKey
    subject: Subject
    action: Action
    estimate: Amount
    metadata: dict[str, Any] | None = None


class CommitRequest(_Strict):
    idempotency_key: IdempotencyKey
    actual: Amount
    metrics: StandardMetrics | None = None
    metadata: dict[str, Any] | None = None


class ReleaseRequest(_Strict):
    idempotency_key: IdempotencyKey
    reason: Annotated[str, Field(max_length=256)] | None = None


class ReservationExtendRequest(_Strict):
    idempotency_key: IdempotencyKey
    extend_by_ms: Annotated[StrictInt, Field(ge=1, le=86_400_000)]
    metadata: dict[str, Any] | None = None


class EventCreateRequest(_Strict):
    idempotency_key: IdempotencyKey
    subject: Subject
    action: Action
    actual: Amount
    overage_policy: OveragePolicy | None = None
    metrics: StandardMetrics | None = None
    client_time_ms: NonNegInt | None = None
    metadata: dict[str, Any] | None = None


M = TypeVar("M", bound=BaseModel)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "body"


def parse(model: type[M], data: Any) -> M:
    """``data`` validated as ``model``, or a 400 INVALID_REQUEST naming the offending field."""
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        # Model-level validators report under the model's own location; drop the noise.
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p))
        where = _location(loc)
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown field"
        elif first["type"] == "missing":
            msg = "field required"
        raise ProtocolError(
            "INVALID_REQUEST",
            f"{where}: {msg}",
            details={"field": where, "errors": exc.error_count()},
        ) from None


def payload_hash(model: BaseModel, *, extra: dict[str, Any] | None = None) -> str:
    """Versioned SHA-256 of the canonical JSON (sorted keys) of the validated, defaulted
    request; ``extra`` binds path parameters such as the reservation id."""
    data = model.model_dump(mode="json")
    if extra:
        data = {**data, "__path": extra}
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return f"{HASH_FORMAT}:{hashlib.sha256(canonical).hexdigest()}"


def dumps(value: Any) -> str:
    """Compact JSON text for values stored by scripts and echoed verbatim later."""
    if value is None:
        return ""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    return orjson.dumps(value).decode()
