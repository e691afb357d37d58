"""Wire request models for webhook subscriptions (admin spec v0.1.25 Webhook* schemas).

Kept in their own module so an OpenAPI document built from wire models can include them.
Event types are checked against the spec's EventType enum (plus ``custom.*``), categories
against EventCategory; the two subscription invariants are checked by the store, since they
depend on the owning tenant and, for updates, on the stored state.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from runcycles_server_lite import events

Category = Literal["budget", "tenant", "api_key", "policy", "reservation", "system", "webhook"]
# An int stays an int on the wire (so a stored 2 renders as 2), but the JSON Schema is the
# spec's plain ``number`` (which integers are), not pydantic's anyOf of the two.
Ratio = Annotated[
    StrictFloat | StrictInt,
    Field(ge=0.0, le=1.0),
    WithJsonSchema({"type": "number", "minimum": 0.0, "maximum": 1.0}),
]
Multiplier = Annotated[
    StrictFloat | StrictInt,
    Field(ge=1.0, le=10.0),
    WithJsonSchema({"type": "number", "minimum": 1.0, "maximum": 10.0}),
]
BurnRate = Annotated[
    StrictFloat | StrictInt, Field(ge=1.5), WithJsonSchema({"type": "number", "minimum": 1.5})
]


def _event_type(value: str) -> str:
    if not events.valid_event_type(value):
        raise ValueError(f"{value!r} is not an EventType")
    return value


EventType = Annotated[StrictStr, AfterValidator(_event_type)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RetryPolicy(_Wire):
    """WebhookRetryPolicy; defaults are the spec's."""

    max_retries: Annotated[StrictInt, Field(ge=0, le=10)] = 5
    initial_delay_ms: Annotated[StrictInt, Field(ge=100, le=60_000)] = 1000
    backoff_multiplier: Multiplier = 2.0
    max_delay_ms: Annotated[StrictInt, Field(ge=1000, le=3_600_000)] = 60_000


class ThresholdConfig(_Wire):
    """WebhookThresholdConfig."""

    budget_utilization: list[Ratio] | None = None
    burn_rate_multiplier: BurnRate | None = None
    burn_rate_window_seconds: Annotated[StrictInt, Field(ge=60, le=86_400)] | None = None
    denial_rate_threshold: Ratio | None = None
    expiry_rate_threshold: Ratio | None = None
    auth_failure_rate_threshold: Ratio | None = None
    rate_window_seconds: Annotated[StrictInt, Field(ge=60, le=86_400)] | None = None


Url = Annotated[StrictStr, Field(min_length=1, max_length=2048)]
Headers = dict[StrictStr, StrictStr]


class WebhookCreate(_Wire):
    """WebhookCreateRequest."""

    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    description: Annotated[StrictStr, Field(max_length=1024)] | None = None
    url: Url
    event_types: Annotated[list[EventType], Field(min_length=1)]
    event_categories: list[Category] | None = None
    scope_filter: StrictStr | None = None
    thresholds: ThresholdConfig | None = None
    signing_secret: Annotated[StrictStr, Field(min_length=1, max_length=512)] | None = None
    headers: Headers | None = None
    retry_policy: RetryPolicy | None = None
    disable_after_failures: Annotated[StrictInt, Field(ge=1)] = 10
    metadata: dict[str, Any] | None = None


class WebhookUpdate(_Wire):
    """WebhookUpdateRequest (partial: only the fields present change)."""

    name: Annotated[StrictStr, Field(max_length=256)] | None = None
    description: Annotated[StrictStr, Field(max_length=1024)] | None = None
    url: Url | None = None
    event_types: list[EventType] | None = None
    event_categories: list[Category] | None = None
    scope_filter: StrictStr | None = None
    thresholds: ThresholdConfig | None = None
    signing_secret: Annotated[StrictStr, Field(min_length=1, max_length=512)] | None = None
    headers: Headers | None = None
    retry_policy: RetryPolicy | None = None
    disable_after_failures: Annotated[StrictInt, Field(ge=1)] | None = None
    status: Literal["ACTIVE", "PAUSED"] | None = None
    metadata: dict[str, Any] | None = None


DEFAULT_BLOCKED_CIDRS: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
)


class SecurityConfig(_Wire):
    """WebhookSecurityConfig (the SSRF guard)."""

    blocked_cidr_ranges: list[StrictStr] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_CIDRS)
    )
    allowed_url_patterns: list[StrictStr] = Field(default_factory=list)
    allow_http: StrictBool = False


class ReplayRequest(_Wire):
    """The replayEvents body."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    from_: Annotated[str | None, Field(alias="from")] = None
    to: str | None = None
    event_types: list[EventType] | None = None
    max_events: Annotated[StrictInt, Field(ge=1, le=1000)] = 100


class WebhookBulkFilter(_Wire):
    """WebhookBulkFilter: the listWebhookSubscriptions query parameters (at least one)."""

    tenant_id: StrictStr | None = None
    status: Literal["ACTIVE", "PAUSED", "DISABLED"] | None = None
    event_type: EventType | None = None
    search: Annotated[StrictStr, Field(max_length=128)] | None = None


class WebhookBulkAction(_Wire):
    """WebhookBulkActionRequest."""

    filter: WebhookBulkFilter
    action: Literal["PAUSE", "RESUME", "DELETE"]
    expected_count: Annotated[StrictInt, Field(ge=0)] | None = None
    idempotency_key: Annotated[StrictStr, Field(min_length=1, max_length=128)]
