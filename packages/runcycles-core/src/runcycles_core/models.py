"""Typed models of the Cycles Protocol v0 wire schemas (``cycles-protocol-v0.yaml``).

Field names are the wire's snake_case names; class names are the spec's schema names (the
official SDK's, where they differ: ``CyclesMetrics`` is the spec's ``StandardMetrics``).

Building is strict and parsing is forward-compatible:

* constructing a model (or passing a dict to a client method) rejects unknown fields, wrong
  types and out-of-range values, so a request that leaves this process matches the spec;
* responses are parsed with :meth:`CyclesModel.parse_response`, which ignores fields this
  version does not know, so a newer server never breaks an older client.

Amounts are Python ``int`` in the int64 range (never floats). Reason codes are open strings.
Every mutating request carries an ``idempotency_key``; one is generated (uuid4) when the caller
gives none, and the model keeps it, so re-sending the same object reuses the key.
"""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Action",
    "Amount",
    "Balance",
    "BalanceResponse",
    "Caps",
    "CommitOveragePolicy",
    "CommitRequest",
    "CommitResponse",
    "CommitStatus",
    "CyclesEvidenceEnvelope",
    "CyclesEvidenceJwk",
    "CyclesEvidenceJwks",
    "CyclesEvidenceRef",
    "CyclesMetrics",
    "CyclesModel",
    "Decision",
    "DecisionReasonCode",
    "DecisionRequest",
    "DecisionResponse",
    "ErrorCode",
    "ErrorResponse",
    "EventCreateRequest",
    "EventCreateResponse",
    "EventStatus",
    "ExtendStatus",
    "ReleaseRequest",
    "ReleaseResponse",
    "ReleaseStatus",
    "ReservationCreateRequest",
    "ReservationCreateResponse",
    "ReservationDetail",
    "ReservationEvidence",
    "ReservationExtendRequest",
    "ReservationExtendResponse",
    "ReservationListResponse",
    "ReservationStatus",
    "ReservationSummary",
    "ResponseMeta",
    "SignedAmount",
    "SortDirection",
    "StandardMetrics",
    "Subject",
    "Unit",
    "new_idempotency_key",
]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# strict: an amount must already be an int (no "5", no 5.0, no True) - money is never coerced.
Int64 = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
NonNegInt64 = Annotated[int, Field(strict=True, ge=0, le=INT64_MAX)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
SubjectValue = Annotated[str, Field(max_length=128)]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=256)]
DecisionReasonCode = Annotated[str, Field(max_length=128)]
"""Open string: unknown reason codes are accepted (the spec requires clients to)."""

_LENIENT = "runcycles_core.lenient"


def new_idempotency_key() -> str:
    """A fresh random idempotency key (uuid4 text)."""
    return str(uuid.uuid4())


class Unit(str, Enum):
    """Unit of an amount. ``USD_MICROCENTS``: 10^-6 cent, so 1 USD = 100_000_000."""

    USD_MICROCENTS = "USD_MICROCENTS"
    TOKENS = "TOKENS"
    CREDITS = "CREDITS"
    RISK_POINTS = "RISK_POINTS"


class CommitOveragePolicy(str, Enum):
    """What commit and events do when the actual exceeds the reservation or the budget."""

    REJECT = "REJECT"
    ALLOW_IF_AVAILABLE = "ALLOW_IF_AVAILABLE"
    ALLOW_WITH_OVERDRAFT = "ALLOW_WITH_OVERDRAFT"


class Decision(str, Enum):
    """The server's decision on a reservation (dry-run) or a decide call."""

    ALLOW = "ALLOW"
    ALLOW_WITH_CAPS = "ALLOW_WITH_CAPS"
    DENY = "DENY"


class ReservationStatus(str, Enum):
    ACTIVE = "ACTIVE"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class CommitStatus(str, Enum):
    COMMITTED = "COMMITTED"


class ReleaseStatus(str, Enum):
    RELEASED = "RELEASED"


class ExtendStatus(str, Enum):
    ACTIVE = "ACTIVE"


class EventStatus(str, Enum):
    APPLIED = "APPLIED"


class SortDirection(str, Enum):
    ASC = "asc"
    DESC = "desc"


class ErrorCode(str, Enum):
    """Wire error codes known to this client. The wire value is an open string:
    :meth:`from_string` maps anything else to ``UNKNOWN``."""

    INVALID_REQUEST = "INVALID_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    BUDGET_FROZEN = "BUDGET_FROZEN"
    BUDGET_CLOSED = "BUDGET_CLOSED"
    RESERVATION_EXPIRED = "RESERVATION_EXPIRED"
    RESERVATION_FINALIZED = "RESERVATION_FINALIZED"
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    UNIT_MISMATCH = "UNIT_MISMATCH"
    OVERDRAFT_LIMIT_EXCEEDED = "OVERDRAFT_LIMIT_EXCEEDED"
    DEBT_OUTSTANDING = "DEBT_OUTSTANDING"
    MAX_EXTENSIONS_EXCEEDED = "MAX_EXTENSIONS_EXCEEDED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    TENANT_CLOSED = "TENANT_CLOSED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    UNKNOWN = "UNKNOWN"

    @property
    def is_retryable(self) -> bool:
        return self in (ErrorCode.INTERNAL_ERROR, ErrorCode.UNKNOWN, ErrorCode.LIMIT_EXCEEDED)

    @classmethod
    def from_string(cls, value: str | None) -> ErrorCode | None:
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class ResponseMeta(BaseModel):
    """HTTP facts about the response a model was parsed from."""

    model_config = ConfigDict(frozen=True)

    status: int
    request_id: str | None = None
    trace_id: str | None = None
    tenant: str | None = None
    rate_limit_remaining: int | None = None
    rate_limit_reset: int | None = None
    attempts: int = 1


_M = TypeVar("_M", bound="CyclesModel")


class CyclesModel(BaseModel):
    """Base of every wire model: strict to build, lenient to parse (see module docstring)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=False)

    # The response meta lives in pydantic's private-attribute slot, set only on the model a
    # response was parsed into: a declared PrivateAttr would make pydantic initialise private
    # state for every nested model of every response (half the cost of parsing one).
    def _get_meta(self) -> ResponseMeta | None:
        private = self.__pydantic_private__
        meta: ResponseMeta | None = None if private is None else private.get("_meta")
        return meta

    def _set_meta(self, value: ResponseMeta | None) -> None:
        private = self.__pydantic_private__
        if private is None:
            object.__setattr__(self, "__pydantic_private__", {"_meta": value})
        else:
            private["_meta"] = value

    _meta = property(_get_meta, _set_meta)

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_when_parsing(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or not info.context or not info.context.get(_LENIENT):
            return data
        known = cls._wire_names()
        if cls.model_config.get("extra") == "allow" or known.issuperset(data):
            return data
        return {k: v for k, v in data.items() if k in known}

    @classmethod
    def _wire_names(cls) -> frozenset[str]:
        # Per class, computed once: every nested model of every parsed response asks.
        cached: frozenset[str] | None = cls.__dict__.get("_wire_names_cache")
        if cached is None:
            cached = frozenset(
                name
                for field_name, info in cls.model_fields.items()
                for name in (field_name, info.alias)
                if name
            )
            type.__setattr__(cls, "_wire_names_cache", cached)
        return cached

    @classmethod
    def parse_response(cls: type[_M], data: Any) -> _M:
        """Validate a decoded response body, ignoring fields this client does not know."""
        return cls.model_validate(data, context={_LENIENT: True})

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent on the wire (unset optional fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def wire_bytes(self) -> bytes:
        """:meth:`to_wire`, encoded as compact JSON (what a request body carries)."""
        return self.__pydantic_serializer__.to_json(self, by_alias=True, exclude_none=True)

    def __eq__(self, other: object) -> bool:
        # Equal wire content is equal, whichever HTTP response (meta) it came from.
        if not isinstance(other, CyclesModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    @property
    def meta(self) -> ResponseMeta | None:
        """Status, request id, trace id and rate-limit headers of the HTTP response, when
        this model came from one."""
        return self._get_meta()


# --- value objects -----------------------------------------------------------------------------


class Amount(CyclesModel):
    """A non-negative int64 quantity in one unit."""

    unit: Unit
    amount: NonNegInt64

    @classmethod
    def usd_microcents(cls, amount: int) -> Amount:
        return cls(unit=Unit.USD_MICROCENTS, amount=amount)

    @classmethod
    def tokens(cls, amount: int) -> Amount:
        return cls(unit=Unit.TOKENS, amount=amount)


class SignedAmount(CyclesModel):
    """An int64 quantity that may be negative (only ``Balance.remaining``)."""

    unit: Unit
    amount: Int64


_SUBJECT_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")


class Subject(CyclesModel):
    """Who spends: the scope hierarchy tenant → workspace → app → workflow → agent → toolset.

    At least one standard field is required; ``dimensions`` alone is not a subject.
    """

    tenant: SubjectValue | None = None
    workspace: SubjectValue | None = None
    app: SubjectValue | None = None
    workflow: SubjectValue | None = None
    agent: SubjectValue | None = None
    toolset: SubjectValue | None = None
    dimensions: dict[str, Annotated[str, Field(max_length=256)]] | None = Field(
        default=None, max_length=16
    )

    LEVELS: ClassVar[tuple[str, ...]] = _SUBJECT_LEVELS

    @model_validator(mode="after")
    def _needs_a_standard_field(self, info: ValidationInfo) -> Subject:
        lenient = bool(info.context and info.context.get(_LENIENT))
        if not lenient and not self.has_at_least_one_standard_field():
            raise ValueError(
                "subject needs at least one of tenant, workspace, app, workflow, agent, toolset"
            )
        return self

    def has_at_least_one_standard_field(self) -> bool:
        return any(getattr(self, level) for level in _SUBJECT_LEVELS)

    def scope_path(self) -> str:
        """``level:value`` segments of the present levels, in canonical order."""
        return "/".join(
            f"{level}:{getattr(self, level)}" for level in _SUBJECT_LEVELS if getattr(self, level)
        )


class Action(CyclesModel):
    """What is being paid for: ``kind`` like ``llm.completion``, ``name`` like ``openai:gpt-4o``."""

    kind: Annotated[str, Field(max_length=64)]
    name: Annotated[str, Field(max_length=256)]
    tags: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, max_length=10)


class Caps(CyclesModel):
    """Soft-landing limits returned with ``ALLOW_WITH_CAPS`` (advisory to the caller)."""

    max_tokens: NonNegInt | None = None
    max_steps_remaining: NonNegInt | None = None
    tool_allowlist: list[Annotated[str, Field(max_length=256)]] | None = None
    tool_denylist: list[Annotated[str, Field(max_length=256)]] | None = None
    cooldown_ms: NonNegInt | None = None

    def is_tool_allowed(self, tool: str) -> bool:
        """A non-empty allowlist wins; otherwise a non-empty denylist blocks exactly its tools."""
        if self.tool_allowlist:
            return tool in self.tool_allowlist
        if self.tool_denylist:
            return tool not in self.tool_denylist
        return True


class CyclesMetrics(CyclesModel):
    """The spec's ``StandardMetrics``: optional usage facts sent with a commit or event."""

    tokens_input: NonNegInt | None = None
    tokens_output: NonNegInt | None = None
    latency_ms: NonNegInt | None = None
    model_version: Annotated[str, Field(max_length=128)] | None = None
    custom: dict[str, Any] | None = None

    def is_empty(self) -> bool:
        return not self.to_wire()


StandardMetrics = CyclesMetrics


class Balance(CyclesModel):
    """One budget ledger (scope, unit). ``remaining = allocated - spent - reserved - debt``."""

    scope: str
    scope_path: str
    remaining: SignedAmount
    reserved: Amount | None = None
    spent: Amount | None = None
    debt: Amount | None = None
    allocated: Amount | None = None
    overdraft_limit: Amount | None = None
    is_over_limit: bool | None = None


class CyclesEvidenceRef(CyclesModel):
    """Pointer to a signed evidence envelope (optional server feature)."""

    evidence_id: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    cycles_evidence_url: Annotated[str, Field(min_length=1)]


class ReservationEvidence(CyclesModel):
    reserve: CyclesEvidenceRef | None = None
    commit: CyclesEvidenceRef | None = None
    release: CyclesEvidenceRef | None = None


class CyclesEvidenceEnvelope(CyclesModel):
    """A signed evidence artifact (``GET /v1/evidence/{id}``; optional server feature).

    Open object: fields beyond the spec's are kept (``model_extra``). The signature is not
    verified here."""

    model_config = ConfigDict(extra="allow")

    schema_version: Literal["cycles-evidence/v0.1"]
    artifact_type: Literal["decide", "reserve", "commit", "release", "error"]
    server_id: str
    signer_did: str
    issued_at_ms: Int64
    payload: dict[str, Any]
    evidence_id: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]
    trace_id: str | None = None


class CyclesEvidenceJwk(CyclesModel):
    """One Ed25519 evidence-signing key."""

    model_config = ConfigDict(extra="allow")

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    cycles_nbf_ms: Int64
    alg: Literal["EdDSA"] | None = None
    cycles_exp_ms: Int64 | None = None
    status: Literal["active", "retired"] | None = None


class CyclesEvidenceJwks(CyclesModel):
    """``GET /v1/.well-known/cycles-jwks.json``: the server's evidence-signing keys."""

    model_config = ConfigDict(extra="allow")

    keys: list[CyclesEvidenceJwk]


class ErrorResponse(CyclesModel):
    """The error envelope of every 4xx/5xx. ``error`` is an open string."""

    error: str
    message: str
    request_id: str
    trace_id: str | None = None
    details: dict[str, Any] | None = None
    cycles_evidence: CyclesEvidenceRef | None = None

    @property
    def error_code(self) -> ErrorCode | None:
        return ErrorCode.from_string(self.error)


# --- requests --------------------------------------------------------------------------------


def _key_field() -> Any:
    return Field(default_factory=new_idempotency_key, min_length=1, max_length=256)


class ReservationCreateRequest(CyclesModel):
    """``POST /v1/reservations``: lock ``estimate`` on every budgeted scope of ``subject``."""

    idempotency_key: IdempotencyKey = _key_field()
    subject: Subject
    action: Action
    estimate: Amount
    ttl_ms: Annotated[int, Field(strict=True, ge=1000, le=86_400_000)] | None = None
    grace_period_ms: Annotated[int, Field(strict=True, ge=0, le=60_000)] | None = None
    overage_policy: CommitOveragePolicy | None = None
    dry_run: bool | None = None
    metadata: dict[str, Any] | None = None


class CommitRequest(CyclesModel):
    """``POST /v1/reservations/{id}/commit``: charge ``actual``; the unused rest returns."""

    idempotency_key: IdempotencyKey = _key_field()
    actual: Amount
    metrics: CyclesMetrics | None = None
    metadata: dict[str, Any] | None = None


class ReleaseRequest(CyclesModel):
    """``POST /v1/reservations/{id}/release``: return the whole reservation."""

    idempotency_key: IdempotencyKey = _key_field()
    reason: Annotated[str, Field(max_length=256)] | None = None


class ReservationExtendRequest(CyclesModel):
    """``POST /v1/reservations/{id}/extend``: push ``expires_at_ms`` out by ``extend_by_ms``."""

    idempotency_key: IdempotencyKey = _key_field()
    extend_by_ms: Annotated[int, Field(strict=True, ge=1, le=86_400_000)]
    metadata: dict[str, Any] | None = None


class DecisionRequest(CyclesModel):
    """``POST /v1/decide``: would this estimate be allowed? Reserves nothing."""

    idempotency_key: IdempotencyKey = _key_field()
    subject: Subject
    action: Action
    estimate: Amount
    metadata: dict[str, Any] | None = None


class EventCreateRequest(CyclesModel):
    """``POST /v1/events``: debit ``actual`` directly, without a reservation."""

    idempotency_key: IdempotencyKey = _key_field()
    subject: Subject
    action: Action
    actual: Amount
    overage_policy: CommitOveragePolicy | None = None
    metrics: CyclesMetrics | None = None
    client_time_ms: NonNegInt64 | None = None
    metadata: dict[str, Any] | None = None


# --- responses -------------------------------------------------------------------------------


class ReservationCreateResponse(CyclesModel):
    decision: Decision
    affected_scopes: list[str]
    reservation_id: str | None = None
    reserved: Amount | None = None
    expires_at_ms: NonNegInt64 | None = None
    remaining_ttl_ms: NonNegInt64 | None = None
    scope_path: str | None = None
    caps: Caps | None = None
    balances: list[Balance] | None = None
    reason_code: DecisionReasonCode | None = None
    retry_after_ms: NonNegInt | None = None
    cycles_evidence: CyclesEvidenceRef | None = None

    def is_allowed(self) -> bool:
        return self.decision in (Decision.ALLOW, Decision.ALLOW_WITH_CAPS)

    def is_denied(self) -> bool:
        return self.decision == Decision.DENY


class CommitResponse(CyclesModel):
    status: CommitStatus
    charged: Amount
    released: Amount | None = None
    balances: list[Balance] | None = None
    cycles_evidence: CyclesEvidenceRef | None = None


class ReleaseResponse(CyclesModel):
    status: ReleaseStatus
    released: Amount
    balances: list[Balance] | None = None
    cycles_evidence: CyclesEvidenceRef | None = None


class ReservationExtendResponse(CyclesModel):
    status: ExtendStatus
    expires_at_ms: NonNegInt64
    remaining_ttl_ms: NonNegInt64 | None = None
    balances: list[Balance] | None = None


class DecisionResponse(CyclesModel):
    decision: Decision
    caps: Caps | None = None
    reason_code: DecisionReasonCode | None = None
    retry_after_ms: NonNegInt | None = None
    affected_scopes: list[str] | None = None
    cycles_evidence: CyclesEvidenceRef | None = None

    def is_allowed(self) -> bool:
        return self.decision in (Decision.ALLOW, Decision.ALLOW_WITH_CAPS)

    def is_denied(self) -> bool:
        return self.decision == Decision.DENY


class EventCreateResponse(CyclesModel):
    status: EventStatus
    event_id: str
    charged: Amount | None = None
    balances: list[Balance] | None = None


class ReservationDetail(CyclesModel):
    """``GET /v1/reservations/{id}``."""

    reservation_id: str
    status: ReservationStatus
    subject: Subject
    action: Action
    reserved: Amount
    created_at_ms: NonNegInt64
    expires_at_ms: NonNegInt64
    scope_path: str
    affected_scopes: list[str]
    idempotency_key: IdempotencyKey | None = None
    committed: Amount | None = None
    finalized_at_ms: NonNegInt64 | None = None
    metadata: dict[str, Any] | None = None
    committed_metadata: dict[str, Any] | None = None
    evidence: ReservationEvidence | None = None


class ReservationSummary(CyclesModel):
    """One row of ``GET /v1/reservations``."""

    reservation_id: str
    status: ReservationStatus
    subject: Subject
    action: Action
    reserved: Amount
    created_at_ms: NonNegInt64
    expires_at_ms: NonNegInt64
    scope_path: str
    affected_scopes: list[str]
    idempotency_key: IdempotencyKey | None = None
    committed: Amount | None = None
    finalized_at_ms: NonNegInt64 | None = None
    metadata: dict[str, Any] | None = None
    committed_metadata: dict[str, Any] | None = None
    evidence: ReservationEvidence | None = None


class ReservationListResponse(CyclesModel):
    reservations: list[ReservationSummary]
    next_cursor: str | None = None
    has_more: bool | None = None


class BalanceResponse(CyclesModel):
    balances: list[Balance]
    next_cursor: str | None = None
    has_more: bool | None = None
