"""Admin plane: budget ledgers (create, list, lookup, patch, freeze/unfreeze, fund, bulk)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runcycles_server_lite import provisioning as prov
from runcycles_server_lite.auth import BUDGETS_READ, BUDGETS_WRITE
from runcycles_server_lite.errors import ProtocolError, invalid
from runcycles_server_lite.http import JSONResponse, read_json
from runcycles_server_lite.keys import UNITS
from runcycles_server_lite.services import Services

from .common import (
    bool_param,
    budget_wire,
    bulk_gate,
    caller,
    contains,
    fund_wire,
    metadata_json,
    optional_body,
    owned_scope,
    page,
    replayable_bulk,
    require_admin,
    scope_tenant,
    search_param,
    to_ms,
    unit_param,
)
from .models import (
    BudgetBulkAction,
    BudgetCreate,
    BudgetFunding,
    BudgetStatusTransition,
    BudgetUpdate,
    check_unit,
    parse,
)


# -- budgets ---------------------------------------------------------------------------------
async def create_budget(request: Request) -> Response:
    """POST /v1/admin/budgets: admin key with tenant_id, or a tenant key with budgets:write."""
    svc, principal = await caller(request, BUDGETS_WRITE)
    req = parse(BudgetCreate, await read_json(request))
    if principal.is_admin:
        if not req.tenant_id:
            raise invalid("tenant_id is required when creating a budget with the admin key")
        tenant_id = req.tenant_id
    else:
        if req.tenant_id is not None:
            raise invalid("tenant_id must not be sent with a tenant API key")
        tenant_id = principal.tenant
        owned_scope(principal, req.scope)
    check_unit(req.allocated, req.unit, "allocated")
    check_unit(req.overdraft_limit, req.unit, "overdraft_limit")
    try:
        record = await prov.create_budget(
            svc.store,
            tenant_id,
            req.scope,
            req.unit,
            req.allocated.amount,
            overdraft_limit=req.overdraft_limit.amount if req.overdraft_limit else 0,
            commit_overage_policy=req.commit_overage_policy,
            rollover_policy=req.rollover_policy,
            metadata=req.metadata,
            period_start_ms=to_ms(req.period_start) if req.period_start else None,
            period_end_ms=to_ms(req.period_end) if req.period_end else None,
        )
    except ProtocolError as exc:
        if exc.code == "TENANT_NOT_FOUND":
            # The spec answers "invalid scope or tenant not found" with 400.
            exc.status = 400
        raise
    return JSONResponse(budget_wire(record), status_code=201)


def _utilization(b: Mapping[str, Any]) -> float:
    allocated = int(b["allocated"]["amount"])
    return 0.0 if allocated == 0 else int(b["spent"]["amount"]) / allocated


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise invalid(f"{name} must be a number in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise invalid(f"{name} must be a number in [0, 1]")
    return value


def _match_budgets(
    records: list[dict[str, str]],
    *,
    scope_prefix: str | None,
    unit: str | None,
    status: str | None,
    over_limit: bool | None,
    has_debt: bool | None,
    umin: float | None,
    umax: float | None,
    search: str | None,
) -> list[dict[str, Any]]:
    """The listBudgets filters (AND), shared with the budget bulk action; wire rows."""
    rows = []
    for b in map(budget_wire, records):
        util = _utilization(b)
        if (
            (scope_prefix is None or b["scope"].startswith(scope_prefix))
            and (unit is None or b["unit"] == unit)
            and (status is None or b["status"] == status)
            and (over_limit is None or b["is_over_limit"] == over_limit)
            and (has_debt is None or (b["debt"]["amount"] > 0) == has_debt)
            and (umin is None or util >= umin)
            and (umax is None or util <= umax)
            and contains(search, b.get("tenant_id"), b["scope"])
        ):
            rows.append(b)
    return rows


async def list_budgets(request: Request) -> Response:
    """GET /v1/admin/budgets: the listBudgets filters, sorts and paging."""
    svc, principal = await caller(request, BUDGETS_READ)
    q = request.query_params
    # A tenant key always lists its own tenant; tenant_id is ignored for it, per the spec.
    tenant_id = (q.get("tenant_id") or None) if principal.is_admin else principal.tenant
    scope_prefix = (q.get("scope_prefix") or "").strip().lower() or None
    unit = q.get("unit") or None
    if unit is not None and unit not in UNITS:
        raise invalid(f"unit must be one of {', '.join(UNITS)}")
    status = q.get("status") or None
    if status is not None and status not in ("ACTIVE", "FROZEN", "CLOSED"):
        raise invalid("status must be ACTIVE, FROZEN or CLOSED")
    over_limit = bool_param(request, "over_limit")
    has_debt = bool_param(request, "has_debt")
    umin = _float_param(request, "utilization_min")
    umax = _float_param(request, "utilization_max")
    if umin is not None and umax is not None and umin > umax:
        raise invalid("utilization_min must not exceed utilization_max")
    search = search_param(request)
    rows = _match_budgets(
        await prov.list_budgets(svc.store, tenant_id),
        scope_prefix=scope_prefix,
        unit=unit,
        status=status,
        over_limit=over_limit,
        has_debt=has_debt,
        umin=umin,
        umax=umax,
        search=search,
    )
    sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        "tenant_id": lambda b: b.get("tenant_id", ""),
        "scope": lambda b: b["scope"],
        "unit": lambda b: b["unit"],
        "status": lambda b: b["status"],
        "commit_overage_policy": lambda b: b.get("commit_overage_policy", ""),
        "utilization": _utilization,
        "debt": lambda b: b["debt"]["amount"],
    }
    filters = {
        "tenant_id": tenant_id,
        "scope_prefix": scope_prefix,
        "unit": unit,
        "status": status,
        "over_limit": over_limit,
        "has_debt": has_debt,
        "umin": umin,
        "umax": umax,
        "search": search,
    }
    return page(request, rows, sort_keys, filters, "ledgers")


async def lookup_budget(request: Request) -> Response:
    """GET /v1/admin/budgets/lookup: one ledger by exact (scope, unit)."""
    svc, principal = await caller(request, BUDGETS_READ)
    scope = request.query_params.get("scope")
    tenant_id = owned_scope(principal, scope)
    unit = unit_param(request)
    assert scope is not None
    record = await prov.get_budget(svc.store, tenant_id, scope, unit)
    if record is None:
        raise ProtocolError("BUDGET_NOT_FOUND", f"no budget for {scope} in {unit}")
    return JSONResponse(budget_wire(record))


async def update_budget(request: Request) -> Response:
    """PATCH /v1/admin/budgets: overdraft_limit, commit_overage_policy, metadata."""
    svc = require_admin(request)
    scope = request.query_params.get("scope")
    tenant_id = scope_tenant(scope)
    unit = unit_param(request)
    req = parse(BudgetUpdate, await read_json(request))
    check_unit(req.overdraft_limit, unit, "overdraft_limit")
    fields: dict[str, str] = {}
    if req.overdraft_limit is not None:
        fields["overdraft_limit"] = str(req.overdraft_limit.amount)
    if req.commit_overage_policy is not None:
        fields["commit_overage_policy"] = req.commit_overage_policy
    if req.metadata is not None:
        fields["metadata_json"] = metadata_json(req.metadata)
    assert scope is not None
    record = await prov.update_budget(svc.store, tenant_id, scope, unit, "patch", fields)
    return JSONResponse(budget_wire(record))


async def _transition(request: Request, mode: str) -> Response:
    svc = require_admin(request)
    scope = request.query_params.get("scope")
    tenant_id = scope_tenant(scope)
    unit = unit_param(request)
    parse(BudgetStatusTransition, await optional_body(request))
    assert scope is not None
    record = await prov.update_budget(svc.store, tenant_id, scope, unit, mode)
    return JSONResponse(budget_wire(record))


async def freeze_budget(request: Request) -> Response:
    """POST /v1/admin/budgets/freeze: ACTIVE to FROZEN."""
    return await _transition(request, "freeze")


async def unfreeze_budget(request: Request) -> Response:
    """POST /v1/admin/budgets/unfreeze: FROZEN to ACTIVE."""
    return await _transition(request, "unfreeze")


async def fund_budget(request: Request) -> Response:
    """POST /v1/admin/budgets/fund: one funding operation through ``fund.lua``."""
    svc, principal = await caller(request, BUDGETS_WRITE)
    scope = request.query_params.get("scope")
    if principal.is_admin:
        tenant_id = request.query_params.get("tenant_id")
        if not tenant_id:
            raise invalid("tenant_id query parameter is required with the admin key")
    else:
        tenant_id = principal.tenant
        owned_scope(principal, scope)
    if not scope:
        raise invalid("scope query parameter is required")
    unit = unit_param(request)
    req = parse(BudgetFunding, await read_json(request))
    check_unit(req.amount, unit, "amount")
    check_unit(req.spent, unit, "spent")
    result = await prov.fund_budget(
        svc.store,
        tenant_id,
        scope,
        unit,
        req.operation,
        req.amount.amount,
        spent=req.spent.amount if req.spent is not None else None,
        idempotency_key=req.idempotency_key,
    )
    return JSONResponse(fund_wire(result, unit))


# Row-level failure codes of the bulk vocabulary (BulkActionRowOutcome.error_code).
_BULK_ROW_CODE = {
    "BUDGET_EXCEEDED": "BUDGET_EXCEEDED",
    "BUDGET_NOT_FOUND": "NOT_FOUND",
}


async def bulk_action_budgets(request: Request) -> Response:
    """POST /v1/admin/budgets/bulk-action: one funding operation applied to every budget of
    one tenant matching a filter (e.g. a billing-period RESET_SPENT under a scope prefix)."""
    svc = require_admin(request)
    req = parse(BudgetBulkAction, await read_json(request))
    f = req.filter
    if (
        f.utilization_min is not None
        and f.utilization_max is not None
        and f.utilization_min > f.utilization_max
    ):
        raise invalid("utilization_min must not exceed utilization_max")
    if req.spent is not None and req.spent.unit != req.amount.unit:
        raise invalid("spent.unit must equal amount.unit")
    if await prov.get_tenant(svc.store, f.tenant_id) is None:
        raise ProtocolError("TENANT_NOT_FOUND", f"tenant {f.tenant_id} not found")
    return await replayable_bulk(svc, "budgets-bulk", req, lambda: _run_budget_bulk(svc, req))


async def _run_budget_bulk(svc: Services, req: BudgetBulkAction) -> dict[str, Any]:
    f = req.filter
    matched = _match_budgets(
        await prov.list_budgets(svc.store, f.tenant_id),
        scope_prefix=(f.scope_prefix or "").strip().lower() or None,
        unit=f.unit,
        status=f.status,
        over_limit=f.over_limit,
        has_debt=f.has_debt,
        umin=f.utilization_min,
        umax=f.utilization_max,
        search=f.search.lower() if f.search else None,
    )
    bulk_gate(len(matched), req.expected_count)
    succeeded: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for b in matched:
        row = b["ledger_id"]
        if b["unit"] != req.amount.unit:
            failed.append(
                {
                    "id": row,
                    "error_code": "INVALID_TRANSITION",
                    "message": f"budget unit is {b['unit']}, amount unit is {req.amount.unit}",
                }
            )
            continue
        if req.action == "REPAY_DEBT" and b["debt"]["amount"] == 0:
            skipped.append({"id": row, "reason": "ALREADY_IN_TARGET_STATE"})
            continue
        try:
            await prov.fund_budget(
                svc.store,
                f.tenant_id,
                b["scope"],
                b["unit"],
                req.action,
                req.amount.amount,
                spent=req.spent.amount if req.spent is not None else None,
            )
        except ProtocolError as exc:
            code = _BULK_ROW_CODE.get(exc.code, "INVALID_TRANSITION")
            failed.append({"id": row, "error_code": code, "message": exc.message})
            continue
        succeeded.append({"id": row})
    return {
        "action": req.action,
        "total_matched": len(matched),
        "succeeded": succeeded,
        "failed": failed,
        "skipped": skipped,
        "idempotency_key": req.idempotency_key,
    }
