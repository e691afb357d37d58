"""Webhook response models (admin spec v0.1.25 ``Webhook*`` response schemas).

They describe the bodies the handlers render (:func:`.subscriptions.wire`,
:func:`.deliveries.wire` and the handlers' own dicts) for the served contract; they are not
used to build responses. Request models, and the nested retry policy and thresholds, are
:mod:`.models`'.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from runcycles_server_lite.admin.responses import BulkActionRowOutcome, Time, _Open, _Out
from runcycles_server_lite.event_responses import EmittedEventType
from runcycles_server_lite.responses import TraceId

from .models import Category, EventType, RetryPolicy, ThresholdConfig

Count = Annotated[StrictInt, Field(ge=0)]


class WebhookSubscription(_Out):
    """A subscription as rendered: never its secret; header values masked."""

    subscription_id: StrictStr
    tenant_id: StrictStr
    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    description: Annotated[StrictStr, Field(max_length=1024)] | None = None
    url: Annotated[StrictStr, Field(max_length=2048)]
    event_types: list[EventType]
    event_categories: list[Category] | None = None
    scope_filter: StrictStr | None = None
    thresholds: ThresholdConfig | None = None
    # The spec lists it write-only: accepted on create/update, never rendered.
    signing_secret: Annotated[StrictStr, Field(json_schema_extra={"writeOnly": True})] | None = None
    headers: dict[StrictStr, StrictStr] | None = None
    status: Literal["ACTIVE", "PAUSED", "DISABLED"]
    retry_policy: RetryPolicy | None = None
    disable_after_failures: Annotated[StrictInt, Field(ge=1)] | None = None
    consecutive_failures: Count | None = None
    created_at: Time
    updated_at: Time | None = None
    last_triggered_at: Time | None = None
    last_success_at: Time | None = None
    last_failure_at: Time | None = None
    metadata: dict[str, Any] | None = None


class WebhookCreateResponse(_Open):
    """createWebhookSubscription / createTenantWebhook: the secret is shown this once."""

    subscription: WebhookSubscription
    signing_secret: StrictStr | None = None


class WebhookListResponse(_Open):
    subscriptions: list[WebhookSubscription]
    next_cursor: StrictStr | None = None
    has_more: StrictBool


class WebhookDelivery(_Out):
    """One delivery of one event to one subscription."""

    delivery_id: StrictStr
    subscription_id: StrictStr
    event_id: StrictStr
    event_type: EmittedEventType | None = None
    status: Literal["PENDING", "SUCCESS", "FAILED", "RETRYING"]
    attempted_at: Time
    completed_at: Time | None = None
    attempts: Count | None = None
    response_status: StrictInt | None = None
    response_time_ms: Count | None = None
    error_message: StrictStr | None = None
    next_retry_at: Time | None = None
    trace_id: TraceId | None = None
    trace_flags: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{2}$")] | None = None
    traceparent_inbound_valid: StrictBool | None = None


class WebhookDeliveryListResponse(_Open):
    deliveries: list[WebhookDelivery]
    next_cursor: StrictStr | None = None
    has_more: StrictBool


class WebhookTestResponse(_Open):
    """testWebhookSubscription / testTenantWebhook: the outcome of the one synchronous send."""

    success: StrictBool
    response_status: StrictInt | None = None
    response_time_ms: Count | None = None
    error_message: StrictStr | None = None
    event_id: StrictStr | None = None


class ReplayResponse(_Open):
    """replayEvents (202): how many deliveries were queued."""

    replay_id: StrictStr | None = None
    events_queued: Count | None = None
    estimated_completion_seconds: Count | None = None


class WebhookBulkActionResponse(_Out):
    action: Literal["PAUSE", "RESUME", "DELETE"]
    total_matched: Count
    succeeded: list[BulkActionRowOutcome]
    failed: list[BulkActionRowOutcome]
    skipped: list[BulkActionRowOutcome]
    idempotency_key: StrictStr
