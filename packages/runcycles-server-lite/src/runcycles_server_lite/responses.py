"""Runtime response models (Cycles Protocol v0): the bodies the runtime plane answers with.

The handlers render plain dicts (the hot path does not pay for model construction); these
models describe those bodies for the served contract (:mod:`.contract`), and the tests check
every rendered body against the schemas built from them. Optional fields are omitted on the
wire when they have no value, never sent as ``null``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from .models import INT64_MAX, Action, Amount, NonNegInt, Subject, Unit

INT64_MIN = -(2**63)
ErrorCode = Literal[
    "INVALID_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BUDGET_EXCEEDED",
    "BUDGET_FROZEN",
    "BUDGET_CLOSED",
    "RESERVATION_EXPIRED",
    "RESERVATION_FINALIZED",
    "IDEMPOTENCY_MISMATCH",
    "UNIT_MISMATCH",
    "OVERDRAFT_LIMIT_EXCEEDED",
    "DEBT_OUTSTANDING",
    "MAX_EXTENSIONS_EXCEEDED",
    "LIMIT_EXCEEDED",
    "TENANT_CLOSED",
    "INTERNAL_ERROR",
]
Decision = Literal["ALLOW", "ALLOW_WITH_CAPS", "DENY"]
ReservationStatus = Literal["ACTIVE", "COMMITTED", "RELEASED", "EXPIRED"]
TraceId = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{32}$")]
EvidenceId = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
ReasonCode = Annotated[StrictStr, Field(max_length=128)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SignedAmount(_Out):
    unit: Unit
    amount: Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]


class Caps(_Out):
    max_tokens: NonNegInt | None = None
    max_steps_remaining: NonNegInt | None = None
    tool_allowlist: list[Annotated[StrictStr, Field(max_length=256)]] | None = None
    tool_denylist: list[Annotated[StrictStr, Field(max_length=256)]] | None = None
    cooldown_ms: NonNegInt | None = None


class Balance(_Out):
    scope: StrictStr
    scope_path: StrictStr
    remaining: SignedAmount
    reserved: Amount | None = None
    spent: Amount | None = None
    allocated: Amount | None = None
    debt: Amount | None = None
    overdraft_limit: Amount | None = None
    is_over_limit: StrictBool | None = None


class CyclesEvidenceRef(_Out):
    evidence_id: EvidenceId
    cycles_evidence_url: Annotated[StrictStr, Field(min_length=1)]


class ReservationEvidence(_Out):
    reserve: CyclesEvidenceRef | None = None
    commit: CyclesEvidenceRef | None = None
    release: CyclesEvidenceRef | None = None


class ErrorResponse(_Out):
    error: ErrorCode
    message: StrictStr
    request_id: StrictStr
    trace_id: TraceId | None = None
    details: dict[str, Any] | None = None
    cycles_evidence: CyclesEvidenceRef | None = None


class DecisionResponse(_Out):
    decision: Decision
    caps: Caps | None = None
    reason_code: ReasonCode | None = None
    retry_after_ms: NonNegInt | None = None
    affected_scopes: list[StrictStr] | None = None
    cycles_evidence: CyclesEvidenceRef | None = None


class ReservationCreateResponse(_Out):
    decision: Decision
    affected_scopes: list[StrictStr]
    reservation_id: StrictStr | None = None
    reserved: Amount | None = None
    expires_at_ms: NonNegInt | None = None
    remaining_ttl_ms: NonNegInt | None = None
    scope_path: StrictStr | None = None
    caps: Caps | None = None
    balances: list[Balance] | None = None
    reason_code: ReasonCode | None = None
    retry_after_ms: NonNegInt | None = None
    cycles_evidence: CyclesEvidenceRef | None = None


class CommitResponse(_Out):
    status: Literal["COMMITTED"]
    charged: Amount
    released: Amount | None = None
    balances: list[Balance] | None = None
    cycles_evidence: CyclesEvidenceRef | None = None


class ReleaseResponse(_Out):
    status: Literal["RELEASED"]
    released: Amount
    balances: list[Balance] | None = None
    cycles_evidence: CyclesEvidenceRef | None = None


class ReservationExtendResponse(_Out):
    status: Literal["ACTIVE"]
    expires_at_ms: NonNegInt
    remaining_ttl_ms: NonNegInt | None = None
    balances: list[Balance] | None = None


class EventCreateResponse(_Out):
    status: Literal["APPLIED"]
    event_id: StrictStr
    charged: Amount | None = None
    balances: list[Balance] | None = None


class _ReservationFields(_Out):
    reservation_id: StrictStr
    status: ReservationStatus
    subject: Subject
    action: Action
    reserved: Amount
    created_at_ms: NonNegInt
    expires_at_ms: NonNegInt
    scope_path: StrictStr
    affected_scopes: list[StrictStr]
    idempotency_key: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    committed: Amount | None = None
    finalized_at_ms: NonNegInt | None = None
    metadata: dict[str, Any] | None = None
    committed_metadata: dict[str, Any] | None = None
    evidence: ReservationEvidence | None = None


class ReservationDetail(_ReservationFields):
    pass


class ReservationSummary(_ReservationFields):
    pass


class ReservationListResponse(_Out):
    reservations: list[ReservationSummary]
    next_cursor: StrictStr | None = None
    has_more: StrictBool | None = None


class BalanceResponse(_Out):
    balances: list[Balance]
    next_cursor: StrictStr | None = None
    has_more: StrictBool | None = None
