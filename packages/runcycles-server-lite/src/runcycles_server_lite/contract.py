"""The server's machine-readable contract: an OpenAPI 3.1 document built from its wire models.

``GET /openapi.json`` serves it (public, on the main and the admin port: it holds no data, only
the shapes). Every operation this server implements is listed in :data:`OPERATIONS` with the
request model it validates and the response model of each status it can answer; the schemas
are pydantic's JSON Schemas of those models (:mod:`.models`, :mod:`.admin.models`,
:mod:`.policies`, :mod:`.responses`, :mod:`.admin.responses`), named as the Cycles Protocol
names them (``Admin`` prefixes where the admin plane's schema of a name differs).

The project's own tests check the app's routes and every rendered body against this document;
only the ``conformance`` session compares it with the upstream protocol files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from pydantic_core import core_schema
from starlette.requests import Request
from starlette.responses import Response

from . import event_responses as er
from . import models as rm
from . import policies
from . import responses as rr
from .admin import models as am
from .admin import responses as ar
from .http import JSONResponse
from .webhooks import models as wm
from .webhooks import responses as wr

OPENAPI_PATH = "/openapi.json"
REF = "#/components/schemas/{model}"
API_KEY = "ApiKeyAuth"
ADMIN_KEY = "AdminKeyAuth"

# Schema name in the document -> the model it is built from (names follow the protocol).
SCHEMAS: dict[str, type[BaseModel]] = {
    # runtime plane
    "Amount": rm.Amount,
    "SignedAmount": rr.SignedAmount,
    "Subject": rm.Subject,
    "Action": rm.Action,
    "StandardMetrics": rm.StandardMetrics,
    "Caps": rr.Caps,
    "Balance": rr.Balance,
    "CyclesEvidenceRef": rr.CyclesEvidenceRef,
    "ReservationEvidence": rr.ReservationEvidence,
    "ErrorResponse": rr.ErrorResponse,
    "DecisionRequest": rm.DecisionRequest,
    "DecisionResponse": rr.DecisionResponse,
    "ReservationCreateRequest": rm.ReservationCreateRequest,
    "ReservationCreateResponse": rr.ReservationCreateResponse,
    "CommitRequest": rm.CommitRequest,
    "CommitResponse": rr.CommitResponse,
    "ReleaseRequest": rm.ReleaseRequest,
    "ReleaseResponse": rr.ReleaseResponse,
    "ReservationExtendRequest": rm.ReservationExtendRequest,
    "ReservationExtendResponse": rr.ReservationExtendResponse,
    "ReservationDetail": rr.ReservationDetail,
    "ReservationSummary": rr.ReservationSummary,
    "ReservationListResponse": rr.ReservationListResponse,
    "BalanceResponse": rr.BalanceResponse,
    "EventCreateRequest": rm.EventCreateRequest,
    "EventCreateResponse": rr.EventCreateResponse,
    # admin plane
    "AdminAmount": am.Amount,
    "AdminErrorResponse": ar.AdminErrorResponse,
    "Tenant": ar.Tenant,
    "TenantCreateRequest": am.TenantCreate,
    "TenantUpdateRequest": am.TenantUpdate,
    "TenantListResponse": ar.TenantListResponse,
    "TenantBulkFilter": am.TenantBulkFilter,
    "TenantBulkActionRequest": am.TenantBulkAction,
    "TenantBulkActionResponse": ar.TenantBulkActionResponse,
    "BulkActionRowOutcome": ar.BulkActionRowOutcome,
    "ApiKey": ar.ApiKey,
    "ApiKeyCreateRequest": am.ApiKeyCreate,
    "ApiKeyUpdateRequest": am.ApiKeyUpdate,
    "ApiKeyCreateResponse": ar.ApiKeyCreateResponse,
    "ApiKeyListResponse": ar.ApiKeyListResponse,
    "ApiKeyValidationRequest": ar.ApiKeyValidationRequest,
    "ApiKeyValidationResponse": ar.ApiKeyValidationResponse,
    "AuthIntrospectResponse": ar.AuthIntrospectResponse,
    "BudgetLedger": ar.BudgetLedger,
    "BudgetCreateRequest": am.BudgetCreate,
    "BudgetUpdateRequest": am.BudgetUpdate,
    "BudgetListResponse": ar.BudgetListResponse,
    "BudgetStatusTransitionRequest": am.BudgetStatusTransition,
    "BudgetFundingRequest": am.BudgetFunding,
    "BudgetFundingResponse": ar.BudgetFundingResponse,
    "BudgetBulkFilter": am.BudgetBulkFilter,
    "BudgetBulkActionRequest": am.BudgetBulkAction,
    "BudgetBulkActionResponse": ar.BudgetBulkActionResponse,
    "AdminCaps": policies.PolicyCaps,
    "ReservationTtlOverride": policies.TtlOverride,
    "RateLimits": policies.RateLimits,
    "Policy": ar.Policy,
    "PolicyCreateRequest": policies.PolicyCreate,
    "PolicyUpdateRequest": policies.PolicyUpdate,
    "PolicyListResponse": ar.PolicyListResponse,
    "AuditLogEntry": ar.AuditLogEntry,
    "AuditLogListResponse": ar.AuditLogListResponse,
    "AdminOverviewResponse": er.AdminOverviewResponse,
    # admin plane: events and webhooks
    "Event": er.Event,
    "EventListResponse": er.EventListResponse,
    "WebhookRetryPolicy": wm.RetryPolicy,
    "WebhookThresholdConfig": wm.ThresholdConfig,
    "WebhookCreateRequest": wm.WebhookCreate,
    "WebhookUpdateRequest": wm.WebhookUpdate,
    "WebhookSubscription": wr.WebhookSubscription,
    "WebhookBulkFilter": wm.WebhookBulkFilter,
    "WebhookBulkActionRequest": wm.WebhookBulkAction,
    "WebhookBulkActionResponse": wr.WebhookBulkActionResponse,
    "WebhookCreateResponse": wr.WebhookCreateResponse,
    "WebhookListResponse": wr.WebhookListResponse,
    "WebhookDelivery": wr.WebhookDelivery,
    "WebhookDeliveryListResponse": wr.WebhookDeliveryListResponse,
    "WebhookTestResponse": wr.WebhookTestResponse,
    "WebhookSecurityConfig": wm.SecurityConfig,
    "ReplayRequest": wm.ReplayRequest,
    "ReplayResponse": wr.ReplayResponse,
}


@dataclass(frozen=True)
class Operation:
    """One implemented operation: its request schema and the schema of each status it may
    answer (``None``: no body)."""

    method: str
    path: str
    operation_id: str
    security: tuple[str, ...]
    request: str | None
    responses: dict[int, str | None]
    tags: tuple[str, ...] = field(default=())

    @property
    def admin_plane(self) -> bool:
        """Specified by the governance admin spec, so answering its error shape: every
        ``/v1/admin`` and ``/v1/auth`` route, and the tenant-facing webhook and event reads
        (``/v1/webhooks``, ``GET /v1/events``), tagged ``admin`` too."""
        return "admin" in self.tags


def _runtime(
    method: str,
    path: str,
    op_id: str,
    request: str | None,
    ok: tuple[int, str],
    errors: tuple[int, ...],
    security: tuple[str, ...] = (API_KEY,),
) -> Operation:
    statuses: dict[int, str | None] = {ok[0]: ok[1]}
    statuses.update(dict.fromkeys((400, 401, 403, *errors, 500), "ErrorResponse"))
    return Operation(method, path, op_id, security, request, statuses, ("runtime",))


def _admin(
    method: str,
    path: str,
    op_id: str,
    request: str | None,
    ok: Mapping[int, str | None],
    errors: tuple[int, ...] = (),
    security: tuple[str, ...] = (ADMIN_KEY,),
) -> Operation:
    statuses: dict[int, str | None] = dict(ok)
    statuses.update(dict.fromkeys((400, 401, 403, *errors, 500), "AdminErrorResponse"))
    return Operation(method, path, op_id, security, request, statuses, ("admin",))


def _webhook_and_event_operations() -> tuple[Operation, ...]:
    """Events and webhooks: the admin key on ``/v1/admin/...``; the tenant-facing routes
    (``/v1/webhooks``, ``GET /v1/events``) take a tenant key, most of them the admin key too."""
    aw, asub = "/v1/admin/webhooks", "/v1/admin/webhooks/{subscription_id}"
    tw, tsub = "/v1/webhooks", "/v1/webhooks/{subscription_id}"
    sec = "/v1/admin/config/webhook-security"
    dual = (API_KEY, ADMIN_KEY)
    sub_ok = {200: "WebhookSubscription"}
    return (
        _admin(
            "post",
            aw,
            "createWebhookSubscription",
            "WebhookCreateRequest",
            {201: "WebhookCreateResponse"},
            (404, 409),
        ),
        _admin("get", aw, "listWebhookSubscriptions", None, {200: "WebhookListResponse"}),
        _admin(
            "post",
            aw + "/bulk-action",
            "bulkActionWebhooks",
            "WebhookBulkActionRequest",
            {200: "WebhookBulkActionResponse"},
            (409,),
        ),
        _admin("get", asub, "getWebhookSubscription", None, sub_ok, (404,)),
        _admin(
            "patch", asub, "updateWebhookSubscription", "WebhookUpdateRequest", sub_ok, (404, 409)
        ),
        _admin("delete", asub, "deleteWebhookSubscription", None, {204: None}, (404,)),
        _admin(
            "post",
            asub + "/test",
            "testWebhookSubscription",
            None,
            {200: "WebhookTestResponse"},
            (404, 409),
        ),
        _admin(
            "get",
            asub + "/deliveries",
            "listWebhookDeliveries",
            None,
            {200: "WebhookDeliveryListResponse"},
            (404,),
        ),
        _admin(
            "post",
            asub + "/replay",
            "replayEvents",
            "ReplayRequest",
            {202: "ReplayResponse"},
            (404, 409),
        ),
        _admin("get", sec, "getWebhookSecurityConfig", None, {200: "WebhookSecurityConfig"}),
        _admin(
            "put",
            sec,
            "updateWebhookSecurityConfig",
            "WebhookSecurityConfig",
            {200: "WebhookSecurityConfig"},
        ),
        _admin("get", "/v1/admin/events", "listEvents", None, {200: "EventListResponse"}),
        _admin("get", "/v1/admin/events/{event_id}", "getEvent", None, {200: "Event"}, (404,)),
        _admin(
            "post",
            tw,
            "createTenantWebhook",
            "WebhookCreateRequest",
            {201: "WebhookCreateResponse"},
            (409,),
            (API_KEY,),
        ),
        _admin("get", tw, "listTenantWebhooks", None, {200: "WebhookListResponse"}, (), dual),
        _admin("get", tsub, "getTenantWebhook", None, sub_ok, (404,), dual),
        _admin(
            "patch", tsub, "updateTenantWebhook", "WebhookUpdateRequest", sub_ok, (404, 409), dual
        ),
        _admin("delete", tsub, "deleteTenantWebhook", None, {204: None}, (404,), dual),
        _admin(
            "post",
            tsub + "/test",
            "testTenantWebhook",
            None,
            {200: "WebhookTestResponse"},
            (404, 409),
            dual,
        ),
        _admin(
            "get",
            tsub + "/deliveries",
            "listTenantWebhookDeliveries",
            None,
            {200: "WebhookDeliveryListResponse"},
            (404,),
            dual,
        ),
        _admin(
            "get",
            "/v1/events",
            "listTenantEvents",
            None,
            {200: "EventListResponse"},
            (),
            (API_KEY,),
        ),
    )


R = "/v1/reservations"
RID = R + "/{reservation_id}"
BOTH = (API_KEY, ADMIN_KEY)
BUDGET_STATUS = (404, 409)

OPERATIONS: tuple[Operation, ...] = (
    _runtime("post", "/v1/decide", "decide", "DecisionRequest", (200, "DecisionResponse"), (409,)),
    _runtime(
        "post",
        R,
        "createReservation",
        "ReservationCreateRequest",
        (200, "ReservationCreateResponse"),
        (404, 409),
    ),
    _runtime("get", R, "listReservations", None, (200, "ReservationListResponse"), (), BOTH),
    _runtime("get", RID, "getReservation", None, (200, "ReservationDetail"), (404, 410), BOTH),
    _runtime(
        "post",
        RID + "/commit",
        "commitReservation",
        "CommitRequest",
        (200, "CommitResponse"),
        (404, 409, 410),
    ),
    _runtime(
        "post",
        RID + "/release",
        "releaseReservation",
        "ReleaseRequest",
        (200, "ReleaseResponse"),
        (404, 409, 410),
        BOTH,
    ),
    _runtime(
        "post",
        RID + "/extend",
        "extendReservation",
        "ReservationExtendRequest",
        (200, "ReservationExtendResponse"),
        (404, 409, 410),
    ),
    _runtime("get", "/v1/balances", "getBalances", None, (200, "BalanceResponse"), ()),
    _runtime(
        "post",
        "/v1/events",
        "createEvent",
        "EventCreateRequest",
        (201, "EventCreateResponse"),
        (404, 409),
    ),
    _admin(
        "post",
        "/v1/admin/tenants",
        "createTenant",
        "TenantCreateRequest",
        {200: "Tenant", 201: "Tenant"},
        (409,),
    ),
    _admin("get", "/v1/admin/tenants", "listTenants", None, {200: "TenantListResponse"}),
    _admin("get", "/v1/admin/tenants/{tenant_id}", "getTenant", None, {200: "Tenant"}, (404,)),
    _admin(
        "patch",
        "/v1/admin/tenants/{tenant_id}",
        "updateTenant",
        "TenantUpdateRequest",
        {200: "Tenant"},
        (404,),
    ),
    _admin(
        "post",
        "/v1/admin/tenants/bulk-action",
        "bulkActionTenants",
        "TenantBulkActionRequest",
        {200: "TenantBulkActionResponse"},
        (409,),
    ),
    _admin(
        "post",
        "/v1/admin/budgets",
        "createBudget",
        "BudgetCreateRequest",
        {201: "BudgetLedger"},
        (409,),
        BOTH,
    ),
    _admin("get", "/v1/admin/budgets", "listBudgets", None, {200: "BudgetListResponse"}, (), BOTH),
    _admin(
        "patch",
        "/v1/admin/budgets",
        "updateBudget",
        "BudgetUpdateRequest",
        {200: "BudgetLedger"},
        BUDGET_STATUS,
    ),
    _admin(
        "post",
        "/v1/admin/budgets/freeze",
        "freezeBudget",
        "BudgetStatusTransitionRequest",
        {200: "BudgetLedger"},
        BUDGET_STATUS,
    ),
    _admin(
        "post",
        "/v1/admin/budgets/unfreeze",
        "unfreezeBudget",
        "BudgetStatusTransitionRequest",
        {200: "BudgetLedger"},
        BUDGET_STATUS,
    ),
    _admin(
        "post",
        "/v1/admin/budgets/fund",
        "fundBudget",
        "BudgetFundingRequest",
        {200: "BudgetFundingResponse"},
        BUDGET_STATUS,
        BOTH,
    ),
    _admin(
        "get",
        "/v1/admin/budgets/lookup",
        "lookupBudget",
        None,
        {200: "BudgetLedger"},
        (404,),
        BOTH,
    ),
    _admin(
        "post",
        "/v1/admin/budgets/bulk-action",
        "bulkActionBudgets",
        "BudgetBulkActionRequest",
        {200: "BudgetBulkActionResponse"},
        BUDGET_STATUS,
    ),
    _admin(
        "post",
        "/v1/admin/policies",
        "createPolicy",
        "PolicyCreateRequest",
        {201: "Policy"},
        (409,),
        BOTH,
    ),
    _admin(
        "get", "/v1/admin/policies", "listPolicies", None, {200: "PolicyListResponse"}, (), BOTH
    ),
    _admin(
        "patch",
        "/v1/admin/policies/{policy_id}",
        "updatePolicy",
        "PolicyUpdateRequest",
        {200: "Policy"},
        (404, 409),
        BOTH,
    ),
    _admin(
        "post",
        "/v1/admin/api-keys",
        "createApiKey",
        "ApiKeyCreateRequest",
        {201: "ApiKeyCreateResponse"},
        (409,),
    ),
    _admin("get", "/v1/admin/api-keys", "listApiKeys", None, {200: "ApiKeyListResponse"}),
    _admin(
        "patch",
        "/v1/admin/api-keys/{key_id}",
        "updateApiKey",
        "ApiKeyUpdateRequest",
        {200: "ApiKey"},
        (404, 409),
    ),
    _admin(
        "delete", "/v1/admin/api-keys/{key_id}", "revokeApiKey", None, {200: "ApiKey"}, (404, 409)
    ),
    _admin(
        "post",
        "/v1/auth/validate",
        "validateApiKey",
        "ApiKeyValidationRequest",
        {200: "ApiKeyValidationResponse"},
    ),
    _admin(
        "get",
        "/v1/auth/introspect",
        "introspectAuth",
        None,
        {200: "AuthIntrospectResponse"},
        (),
        (ADMIN_KEY, API_KEY),
    ),
    _admin("get", "/v1/admin/audit/logs", "listAuditLogs", None, {200: "AuditLogListResponse"}),
    _admin("get", "/v1/admin/overview", "getAdminOverview", None, {200: "AdminOverviewResponse"}),
    *_webhook_and_event_operations(),
)


class _WireSchema(GenerateJsonSchema):
    """JSON Schema of what goes on the wire: an optional field is omitted, never ``null``,
    so ``X | None = None`` is just ``X``; pydantic's titles are dropped."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> Any:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> Any:
        out = super().default_schema(schema)
        if isinstance(out, dict) and "default" in out and out["default"] is None:
            out = {k: v for k, v in out.items() if k != "default"}  # absent, not null
        return out

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def generate(self, schema: Any, mode: JsonSchemaMode = "validation") -> Any:
        out = super().generate(schema, mode)
        out.pop("title", None)
        return out


_REF = re.compile(r"^#/components/schemas/(.+)$")


def _rename(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and (m := _REF.match(value)):
                out[key] = REF.format(model=names.get(m.group(1), m.group(1)))
            elif key == "title" and isinstance(value, str):
                continue
            else:
                out[key] = _rename(value, names)
        return out
    if isinstance(node, list):
        return [_rename(v, names) for v in node]
    return node


def component_schemas() -> dict[str, Any]:
    """Every schema of :data:`SCHEMAS` (and the nested models they use), by document name."""
    mode: JsonSchemaMode = "validation"
    pairs = [(model, mode) for model in SCHEMAS.values()]
    keys, defs = models_json_schema(pairs, ref_template=REF, schema_generator=_WireSchema)
    generated = defs.get("$defs", {})
    names: dict[str, str] = {}
    for name, model in SCHEMAS.items():
        ref = keys[(model, "validation")]["$ref"]
        own = _REF.match(ref)
        assert own is not None
        names.setdefault(own.group(1), name)
    # Pydantic names nested models by class; two classes of one name get module prefixes.
    out: dict[str, Any] = {}
    for gen_name, schema in generated.items():
        name = names.get(gen_name, gen_name.rsplit("__", 1)[-1])
        renamed = _rename(schema, names)
        if name in out and out[name] != renamed:
            raise ValueError(f"two different schemas would both be named {name}")
        out[name] = renamed
    return dict(sorted(out.items()))


def _operation(op: Operation) -> dict[str, Any]:
    body: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": list(op.tags),
        "security": [{scheme: []} for scheme in op.security],
    }
    params = re.findall(r"{([^}]+)}", op.path)
    if params:
        body["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
    if op.request is not None:
        body["requestBody"] = {
            "required": op.operation_id not in _OPTIONAL_BODY,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=op.request)}}},
        }
    responses: dict[str, Any] = {}
    for status, schema in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": _DESCRIPTIONS.get(status, "Success")}
        if schema is not None:
            entry["content"] = {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}
        responses[str(status)] = entry
    body["responses"] = responses
    return body


# Freeze and unfreeze take an optional reason; the body may be absent.
_OPTIONAL_BODY = frozenset({"freezeBudget", "unfreezeBudget"})
_DESCRIPTIONS = {
    400: "Invalid request",
    401: "Missing or invalid key",
    403: "Forbidden for this key",
    404: "Not found",
    409: "Conflict (idempotency, state or budget)",
    410: "Reservation expired",
    500: "Internal error",
}


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every operation this server implements."""
    from . import __version__

    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runcycles server-lite",
            "version": __version__,
            "description": "The Cycles Protocol v0 runtime plane and the governance admin "
            "operations this server implements.",
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                API_KEY: {"type": "apiKey", "in": "header", "name": "X-Cycles-API-Key"},
                ADMIN_KEY: {"type": "apiKey", "in": "header", "name": "X-Admin-API-Key"},
            },
        },
    }


async def serve_openapi(request: Request) -> Response:
    """GET /openapi.json: the contract above (no key needed: it holds shapes, not data)."""
    return JSONResponse(openapi_document())
