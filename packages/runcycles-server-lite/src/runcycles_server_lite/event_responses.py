"""Event response models (admin spec v0.1.25 ``Event`` and ``EventListResponse``).

Like :mod:`.admin.responses`, these describe the bodies the handlers render (``events.render``
of a stored stream entry, paged by :mod:`.events_api`) for the served contract; they are not
used to build responses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from .admin.responses import (
    AccessControlStats,
    BudgetCounts,
    DebtScope,
    EventCounts,
    FailingWebhook,
    OverLimitScope,
    QuotaHealth,
    TenantCounts,
    Time,
    WebhookCounts,
    _Open,
    _Out,
)
from .events import EVENT_TYPES
from .responses import TraceId
from .webhooks.models import Category

# The server emits only the spec's EventType values (``custom.*`` types exist only in
# subscriptions' filters), so the rendered type is documented as the enum.
EmittedEventType = Annotated[StrictStr, Field(json_schema_extra={"enum": list(EVENT_TYPES)})]


class EventActor(_Out):
    """Who caused the event."""

    type: Literal["admin", "api_key", "admin_on_behalf_of", "system", "scheduler"]
    key_id: StrictStr | None = None
    source_ip: StrictStr | None = None


class Event(_Out):
    """One event of a tenant's (or the system's) stream."""

    event_id: StrictStr
    event_type: EmittedEventType
    category: Category
    timestamp: Time
    tenant_id: StrictStr
    scope: StrictStr | None = None
    actor: EventActor | None = None
    source: StrictStr
    data: dict[str, Any] | None = None
    correlation_id: StrictStr | None = None
    request_id: StrictStr | None = None
    trace_id: TraceId | None = None
    metadata: dict[str, Any] | None = None


class EventListResponse(_Open):
    """A page of events (listEvents, listTenantEvents)."""

    events: list[Event]
    next_cursor: StrictStr | None = None
    has_more: StrictBool


class AdminOverviewResponse(_Open):
    """The admin dashboard's one-request summary (``GET /v1/admin/overview``)."""

    as_of: Time
    event_window_seconds: StrictInt
    tenant_counts: TenantCounts
    budget_counts: BudgetCounts
    over_limit_scopes: Annotated[list[OverLimitScope], Field(max_length=10)]
    debt_scopes: Annotated[list[DebtScope], Field(max_length=10)]
    webhook_counts: WebhookCounts
    failing_webhooks: Annotated[list[FailingWebhook], Field(max_length=10)]
    event_counts: EventCounts
    recent_denials: Annotated[list[Event], Field(max_length=10)]
    recent_expiries: Annotated[list[Event], Field(max_length=10)]
    recent_denials_by_reason: dict[str, StrictInt] | None = None
    quota_health: QuotaHealth | None = None
    access_control_stats: AccessControlStats | None = None
