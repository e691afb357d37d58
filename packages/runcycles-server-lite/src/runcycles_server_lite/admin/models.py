"""Request models of the admin plane (cycles-governance-admin v0.1.25 request schemas).

Models forbid unknown fields, as the spec's ``additionalProperties: false`` does, and keep
"absent" distinct from "default" (a field the caller did not send stays ``None``), so tenant
and budget defaults are applied where they live, not here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from runcycles_server_lite.errors import ProtocolError, invalid

Unit = Literal["USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS"]
OveragePolicy = Literal["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"]
ExpiryPolicy = Literal["AUTO_RELEASE", "MANUAL_CLEANUP", "GRACE_ONLY"]
RolloverPolicy = Literal["NONE", "CARRY_FORWARD", "CAP_AT_ALLOCATED"]
TenantStatus = Literal["ACTIVE", "SUSPENDED", "CLOSED"]
FundOperation = Literal["CREDIT", "DEBIT", "RESET", "REPAY_DEBT", "RESET_SPENT"]
Permission = Literal[
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "budgets:read",
    "budgets:write",
    "policies:read",
    "policies:write",
    "webhooks:read",
    "webhooks:write",
    "events:read",
    "admin:read",
    "admin:write",
    "admin:tenants:read",
    "admin:tenants:write",
    "admin:budgets:read",
    "admin:budgets:write",
    "admin:policies:read",
    "admin:policies:write",
    "admin:apikeys:read",
    "admin:apikeys:write",
    "admin:webhooks:read",
    "admin:webhooks:write",
    "admin:events:read",
    "admin:audit:read",
]

INT64_MAX = 2**63 - 1
TtlMs = Annotated[StrictInt, Field(ge=1000, le=86_400_000)]
NonNegative = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Amount(_Model):
    """``{unit, amount}`` with a non-negative int64 amount."""

    unit: Unit
    amount: NonNegative


class TenantCreate(_Model):
    tenant_id: Annotated[StrictStr, Field(pattern=r"^[a-z0-9-]+$", min_length=3, max_length=64)]
    name: Annotated[StrictStr, Field(max_length=256)]
    parent_tenant_id: StrictStr | None = None
    metadata: dict[str, StrictStr] | None = None
    default_commit_overage_policy: OveragePolicy | None = None
    default_reservation_ttl_ms: TtlMs | None = None
    max_reservation_ttl_ms: TtlMs | None = None
    max_reservation_extensions: NonNegative | None = None
    reservation_expiry_policy: ExpiryPolicy | None = None


class TenantUpdate(_Model):
    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    status: TenantStatus | None = None
    metadata: dict[str, Any] | None = None
    default_commit_overage_policy: OveragePolicy | None = None
    default_reservation_ttl_ms: TtlMs | None = None
    max_reservation_ttl_ms: TtlMs | None = None
    max_reservation_extensions: NonNegative | None = None


class TenantBulkFilter(_Model):
    status: TenantStatus | None = None
    parent_tenant_id: StrictStr | None = None
    observe_mode: StrictStr | None = None  # v0.1.26 extension: accepted and ignored
    search: Annotated[StrictStr, Field(max_length=128)] | None = None


class TenantBulkAction(_Model):
    filter: TenantBulkFilter
    action: Literal["SUSPEND", "REACTIVATE", "CLOSE"]
    expected_count: Annotated[StrictInt, Field(ge=0)] | None = None
    idempotency_key: Annotated[StrictStr, Field(min_length=1, max_length=128)]


class BudgetBulkFilter(_Model):
    tenant_id: StrictStr
    scope_prefix: StrictStr | None = None
    unit: Unit | None = None
    status: Literal["ACTIVE", "FROZEN", "CLOSED"] | None = None
    over_limit: bool | None = None
    has_debt: bool | None = None
    utilization_min: Annotated[float, Field(ge=0, le=1)] | None = None
    utilization_max: Annotated[float, Field(ge=0, le=1)] | None = None
    search: Annotated[StrictStr, Field(max_length=128)] | None = None


class BudgetBulkAction(_Model):
    filter: BudgetBulkFilter
    action: FundOperation
    amount: Amount
    spent: Amount | None = None
    reason: Annotated[StrictStr, Field(max_length=512)] | None = None
    expected_count: Annotated[StrictInt, Field(ge=0)] | None = None
    idempotency_key: Annotated[StrictStr, Field(min_length=1, max_length=128)]


class ApiKeyCreate(_Model):
    tenant_id: StrictStr
    name: Annotated[StrictStr, Field(max_length=256)]
    description: Annotated[StrictStr, Field(max_length=1024)] | None = None
    permissions: list[Permission] | None = None
    scope_filter: list[StrictStr] | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] | None = None


class ApiKeyUpdate(_Model):
    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    description: Annotated[StrictStr, Field(max_length=1024)] | None = None
    permissions: list[Permission] | None = None
    scope_filter: list[StrictStr] | None = None
    metadata: dict[str, Any] | None = None


class BudgetCreate(_Model):
    tenant_id: StrictStr | None = None
    scope: StrictStr
    unit: Unit
    allocated: Amount
    overdraft_limit: Amount | None = None
    commit_overage_policy: OveragePolicy | None = None
    rollover_policy: RolloverPolicy | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    metadata: dict[str, Any] | None = None


class BudgetUpdate(_Model):
    overdraft_limit: Amount | None = None
    commit_overage_policy: OveragePolicy | None = None
    metadata: dict[str, Any] | None = None


class BudgetStatusTransition(_Model):
    reason: Annotated[StrictStr, Field(max_length=512)] | None = None
    metadata: dict[str, Any] | None = None


class BudgetFunding(_Model):
    operation: FundOperation
    amount: Amount
    spent: Amount | None = None
    reason: Annotated[StrictStr, Field(max_length=512)] | None = None
    idempotency_key: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    metadata: dict[str, Any] | None = None


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    """Validate ``data`` against ``model``; 400 INVALID_REQUEST naming each bad field."""
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        first = errors[0]
        raise ProtocolError(
            "INVALID_REQUEST",
            f"{first['field']}: {first['message']}",
            details={"errors": errors},
        ) from None


def check_unit(amount: Amount | None, unit: str, field: str) -> None:
    """400 UNIT_MISMATCH when an Amount's unit differs from the ledger's."""
    if amount is not None and amount.unit != unit:
        raise ProtocolError(
            "UNIT_MISMATCH",
            f"{field}.unit is {amount.unit} but the budget's unit is {unit}",
            details={"field": field, "expected_unit": unit, "requested_unit": amount.unit},
        )
