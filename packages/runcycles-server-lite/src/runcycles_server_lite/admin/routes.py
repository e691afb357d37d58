"""Admin plane: a compatible subset of the governance admin API (cycles-governance-admin v0.1.25).

Same paths, payloads, status codes and error codes as the reference admin server for tenants,
API keys, budgets (create, list, lookup, update, freeze/unfreeze, fund) and auth
validate/introspect, so provisioning scripts written for the reference work unchanged.
Records are written only through :mod:`provisioning`; the handlers (``tenants``,
``keys``, ``budgets``, ``auth``, ``policies``, ``audit``) validate wire
payloads, authorise the caller and render records. This module is the route table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from runcycles_server_lite.audit import audited, list_audit_logs
from runcycles_server_lite.policies import create_policy, list_policies, update_policy

from .auth import introspect, validate_key
from .budgets import (
    bulk_action_budgets,
    create_budget,
    freeze_budget,
    fund_budget,
    list_budgets,
    lookup_budget,
    unfreeze_budget,
    update_budget,
)
from .keys import create_api_key, list_api_keys, revoke_api_key, update_api_key
from .overview import overview
from .tenants import (
    bulk_action_tenants,
    create_tenant,
    get_tenant,
    list_tenants,
    update_tenant,
)


def routes() -> list[BaseRoute]:
    """Admin-plane routes (mounted on the main port and on ``--admin-port``). Mutations are
    audited under the spec's operation names."""

    def audit(op: str, kind: str, fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        return audited(op, kind)(fn)

    return [
        Route(
            "/v1/admin/tenants", audit("createTenant", "tenant", create_tenant), methods=["POST"]
        ),
        Route("/v1/admin/tenants", list_tenants, methods=["GET"]),
        Route(
            "/v1/admin/tenants/bulk-action",
            audit("bulkActionTenants", "tenant", bulk_action_tenants),
            methods=["POST"],
        ),
        Route("/v1/admin/tenants/{tenant_id}", get_tenant, methods=["GET"]),
        Route(
            "/v1/admin/tenants/{tenant_id}",
            audit("updateTenant", "tenant", update_tenant),
            methods=["PATCH"],
        ),
        Route(
            "/v1/admin/api-keys", audit("createApiKey", "api_key", create_api_key), methods=["POST"]
        ),
        Route("/v1/admin/api-keys", list_api_keys, methods=["GET"]),
        Route(
            "/v1/admin/api-keys/{key_id}",
            audit("updateApiKey", "api_key", update_api_key),
            methods=["PATCH"],
        ),
        Route(
            "/v1/admin/api-keys/{key_id}",
            audit("revokeApiKey", "api_key", revoke_api_key),
            methods=["DELETE"],
        ),
        Route(
            "/v1/admin/budgets", audit("createBudget", "budget", create_budget), methods=["POST"]
        ),
        Route("/v1/admin/budgets", list_budgets, methods=["GET"]),
        Route(
            "/v1/admin/budgets", audit("updateBudget", "budget", update_budget), methods=["PATCH"]
        ),
        Route("/v1/admin/budgets/lookup", lookup_budget, methods=["GET"]),
        Route(
            "/v1/admin/budgets/bulk-action",
            audit("bulkActionBudgets", "budget", bulk_action_budgets),
            methods=["POST"],
        ),
        Route(
            "/v1/admin/budgets/freeze",
            audit("freezeBudget", "budget", freeze_budget),
            methods=["POST"],
        ),
        Route(
            "/v1/admin/budgets/unfreeze",
            audit("unfreezeBudget", "budget", unfreeze_budget),
            methods=["POST"],
        ),
        Route(
            "/v1/admin/budgets/fund", audit("fundBudget", "budget", fund_budget), methods=["POST"]
        ),
        Route(
            "/v1/admin/policies", audit("createPolicy", "policy", create_policy), methods=["POST"]
        ),
        Route("/v1/admin/policies", list_policies, methods=["GET"]),
        Route(
            "/v1/admin/policies/{policy_id}",
            audit("updatePolicy", "policy", update_policy),
            methods=["PATCH"],
        ),
        Route("/v1/admin/audit/logs", list_audit_logs, methods=["GET"]),
        Route("/v1/admin/overview", overview, methods=["GET"]),
        Route("/v1/auth/validate", validate_key, methods=["POST"]),
        Route("/v1/auth/introspect", introspect, methods=["GET"]),
    ]
