"""Admin-plane response models (cycles-governance-admin v0.1.25 response schemas).

Like :mod:`.responses`, these describe the bodies the handlers render (``admin.common``'s
``*_wire`` helpers and the handlers' own dicts) for the served contract; they are not used to
build responses. Timestamps are ISO-8601 strings; absent optional fields are omitted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from runcycles_server_lite.policies import PolicyCaps, RateLimits, TtlOverride
from runcycles_server_lite.responses import SignedAmount, TraceId

from .models import (
    Amount,
    ExpiryPolicy,
    FundOperation,
    OveragePolicy,
    Permission,
    RolloverPolicy,
    TenantStatus,
    Unit,
)

AdminErrorCode = Literal[
    "INVALID_REQUEST",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BUDGET_NOT_FOUND",
    "BUDGET_EXCEEDED",
    "BUDGET_FROZEN",
    "BUDGET_CLOSED",
    "TENANT_NOT_FOUND",
    "TENANT_SUSPENDED",
    "TENANT_CLOSED",
    "KEY_REVOKED",
    "KEY_EXPIRED",
    "DUPLICATE_RESOURCE",
    "INSUFFICIENT_PERMISSIONS",
    "IDEMPOTENCY_MISMATCH",
    "UNIT_MISMATCH",
    "OVERDRAFT_LIMIT_EXCEEDED",
    "DEBT_OUTSTANDING",
    "RESERVATION_EXPIRED",
    "RESERVATION_FINALIZED",
    "LIMIT_EXCEEDED",
    "COUNT_MISMATCH",
    "POLICY_VIOLATION",
    "WEBHOOK_NOT_FOUND",
    "WEBHOOK_URL_INVALID",
    "EVENT_NOT_FOUND",
    "REPLAY_IN_PROGRESS",
    "INTERNAL_ERROR",
]
Count = Annotated[StrictInt, Field(ge=0)]
Time = datetime  # rendered as an ISO-8601 string (JSON Schema ``format: date-time``)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    """Response objects the spec leaves open (no ``additionalProperties: false``)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class AdminErrorResponse(_Open):
    error: AdminErrorCode
    message: StrictStr
    request_id: StrictStr
    trace_id: TraceId | None = None
    details: dict[str, Any] | None = None


class Tenant(_Out):
    tenant_id: Annotated[StrictStr, Field(pattern=r"^[a-z0-9-]+$", min_length=3, max_length=64)]
    name: Annotated[StrictStr, Field(max_length=256)]
    status: TenantStatus
    parent_tenant_id: StrictStr | None = None
    default_commit_overage_policy: OveragePolicy | None = None
    default_reservation_ttl_ms: Annotated[StrictInt, Field(ge=1000, le=86_400_000)] | None = None
    max_reservation_ttl_ms: Annotated[StrictInt, Field(ge=1000, le=86_400_000)] | None = None
    max_reservation_extensions: Count | None = None
    reservation_expiry_policy: ExpiryPolicy | None = None
    metadata: Annotated[dict[str, StrictStr], Field(max_length=32)] | None = None
    created_at: Time
    updated_at: Time | None = None
    suspended_at: Time | None = None
    closed_at: Time | None = None


class _Page(_Open):
    next_cursor: StrictStr | None = None
    has_more: StrictBool | None = None


class TenantListResponse(_Page):
    tenants: list[Tenant]


class BulkActionRowOutcome(_Out):
    id: StrictStr
    error_code: StrictStr | None = None
    message: StrictStr | None = None
    reason: StrictStr | None = None


class TenantBulkActionResponse(_Out):
    action: Literal["SUSPEND", "REACTIVATE", "CLOSE"]
    total_matched: Count
    succeeded: list[BulkActionRowOutcome]
    failed: list[BulkActionRowOutcome]
    skipped: list[BulkActionRowOutcome]
    idempotency_key: StrictStr


class BudgetBulkActionResponse(_Out):
    action: FundOperation
    total_matched: Count
    succeeded: list[BulkActionRowOutcome]
    failed: list[BulkActionRowOutcome]
    skipped: list[BulkActionRowOutcome]
    idempotency_key: StrictStr


ApiKeyStatus = Literal["ACTIVE", "REVOKED", "EXPIRED"]


class ApiKey(_Out):
    key_id: StrictStr
    tenant_id: StrictStr
    key_prefix: StrictStr
    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    description: Annotated[StrictStr, Field(max_length=1024)] | None = None
    permissions: list[Permission] | None = None
    scope_filter: list[StrictStr] | None = None
    status: ApiKeyStatus
    created_at: Time
    last_used_at: Time | None = None
    expires_at: Time  # every key has one (a default lifetime when none is asked for)
    revoked_at: Time | None = None
    revoked_reason: Annotated[StrictStr, Field(max_length=512)] | None = None
    metadata: dict[str, Any] | None = None


class ApiKeyCreateResponse(_Open):
    key_id: StrictStr
    key_secret: StrictStr
    key_prefix: StrictStr
    tenant_id: StrictStr
    permissions: list[Permission] | None = None
    created_at: Time
    expires_at: Time


class ApiKeyListResponse(_Page):
    keys: list[ApiKey]


class ApiKeyValidationRequest(_Open):
    key_secret: StrictStr


class ApiKeyValidationResponse(_Open):
    valid: StrictBool
    tenant_id: StrictStr
    key_id: StrictStr | None = None
    permissions: list[Permission] | None = None
    scope_filter: list[StrictStr] | None = None
    expires_at: Time | None = None
    reason: StrictStr | None = None


class Capabilities(_Open):
    view_overview: StrictBool
    view_budgets: StrictBool
    view_events: StrictBool
    view_webhooks: StrictBool
    view_audit: StrictBool
    view_tenants: StrictBool
    view_api_keys: StrictBool
    view_policies: StrictBool
    view_reservations: StrictBool | None = None
    manage_budgets: StrictBool | None = None
    manage_policies: StrictBool | None = None
    manage_webhooks: StrictBool | None = None
    manage_tenants: StrictBool | None = None
    manage_api_keys: StrictBool | None = None
    manage_reservations: StrictBool | None = None


class AuthIntrospectResponse(_Open):
    authenticated: StrictBool
    auth_type: Literal["admin", "tenant"]
    permissions: list[StrictStr]
    capabilities: Capabilities
    tenant_id: StrictStr | None = None
    scope_filter: list[StrictStr] | None = None


class BudgetLedger(_Out):
    ledger_id: StrictStr
    tenant_id: StrictStr | None = None
    scope: StrictStr
    scope_path: StrictStr | None = None
    unit: Unit
    allocated: Amount
    remaining: SignedAmount
    reserved: Amount | None = None
    spent: Amount | None = None
    debt: Amount | None = None
    overdraft_limit: Amount | None = None
    is_over_limit: StrictBool | None = None
    commit_overage_policy: OveragePolicy | None = None
    status: Literal["ACTIVE", "FROZEN", "CLOSED"]
    rollover_policy: RolloverPolicy | None = None
    period_start: Time | None = None
    period_end: Time | None = None
    created_at: Time
    updated_at: Time | None = None


class BudgetListResponse(_Out):
    ledgers: list[BudgetLedger]
    next_cursor: StrictStr | None = None
    has_more: StrictBool | None = None


class BudgetFundingResponse(_Open):
    operation: StrictStr
    previous_allocated: Amount
    new_allocated: Amount
    previous_remaining: SignedAmount
    new_remaining: SignedAmount
    previous_debt: Amount | None = None
    new_debt: Amount | None = None
    previous_spent: Amount | None = None
    new_spent: Amount | None = None
    timestamp: Time | None = None


class Policy(_Out):
    policy_id: StrictStr
    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    description: Annotated[StrictStr, Field(max_length=1024)] | None = None
    scope_pattern: StrictStr
    priority: Count | None = None
    caps: PolicyCaps | None = None
    commit_overage_policy: OveragePolicy | None = None
    reservation_ttl_override: TtlOverride | None = None
    rate_limits: RateLimits | None = None
    status: Literal["ACTIVE", "DISABLED"]
    effective_from: Time | None = None
    effective_until: Time | None = None
    created_at: Time
    updated_at: Time | None = None


class PolicyListResponse(_Page):
    policies: list[Policy]


class AuditLogEntry(_Open):
    log_id: StrictStr
    timestamp: Time
    tenant_id: StrictStr
    key_id: StrictStr | None = None
    user_agent: StrictStr | None = None
    source_ip: StrictStr | None = None
    operation: StrictStr
    resource_type: StrictStr | None = None
    resource_id: StrictStr | None = None
    request_id: StrictStr | None = None
    trace_id: TraceId | None = None
    status: StrictInt
    error_code: StrictStr | None = None
    subject: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    amount: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class AuditLogListResponse(_Open):
    logs: list[AuditLogEntry]
    next_cursor: StrictStr | None = None
    has_more: StrictBool


# -- the overview's sections -------------------------------------------------------------------
class TenantCounts(_Out):
    total: StrictInt
    active: StrictInt
    suspended: StrictInt
    closed: StrictInt
    in_observe_mode: StrictInt | None = None


class BudgetCounts(_Out):
    total: StrictInt
    active: StrictInt
    frozen: StrictInt
    closed: StrictInt
    over_limit: StrictInt
    with_debt: StrictInt
    by_unit: dict[str, StrictInt]


class OverLimitScope(_Out):
    scope: StrictStr
    unit: Unit
    allocated: StrictInt
    remaining: StrictInt
    debt: StrictInt


class DebtScope(_Out):
    scope: StrictStr
    unit: Unit
    debt: StrictInt
    overdraft_limit: StrictInt


class WebhookCounts(_Out):
    total: StrictInt
    active: StrictInt
    disabled: StrictInt
    with_failures: StrictInt


class FailingWebhook(_Out):
    subscription_id: StrictStr
    url: StrictStr
    consecutive_failures: StrictInt
    last_failure_at: Time | None = None


class EventCounts(_Out):
    total_recent: StrictInt
    by_category: dict[str, StrictInt]


class TopOffender(_Out):
    scope: StrictStr
    action_kind: StrictStr
    window: StrictStr | None = None
    used: StrictInt
    limit: StrictInt
    utilization_pct: float | None = None


class QuotaHealth(_Out):
    counters_above_80pct: StrictInt | None = None
    counters_at_limit: StrictInt | None = None
    top_offenders: Annotated[list[TopOffender], Field(max_length=10)] | None = None


class AccessControlStats(_Out):
    policies_with_allow_list: StrictInt | None = None
    policies_with_deny_list: StrictInt | None = None
