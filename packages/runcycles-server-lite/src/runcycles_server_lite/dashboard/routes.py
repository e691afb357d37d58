"""Dashboard pages and actions under ``/dashboard``.

Reads use the admin plane's readers (:mod:`.data`); the fund and freeze actions call the
admin API's own operations (:func:`provisioning.fund_budget`,
:func:`provisioning.update_budget`) under the admin API's permission rules and leave the same
audit entries (``fundBudget``, ``freezeBudget``, ``unfreezeBudget``). A browser's write is
accepted only as a POST from this server's own origin carrying the session's CSRF token; a
script that sends an API header needs neither (a browser cannot attach those headers across
origins) and gets JSON back.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from runcycles_core.amounts import MONEY_UNIT, parse_amount
from runcycles_server_lite import provisioning as prov
from runcycles_server_lite._body import read_limited
from runcycles_server_lite.admin_common import budget_wire, fund_wire
from runcycles_server_lite.audit import audited
from runcycles_server_lite.auth import client_ip
from runcycles_server_lite.errors import ProtocolError, invalid
from runcycles_server_lite.http import JSONResponse
from runcycles_server_lite.services import services

from . import data
from .access import Viewer, login, viewer
from .render import SECURITY_HEADERS, money, page
from .session import Sessions, clear_cookie, csrf_ok, same_origin, set_cookie
from .throttle import LoginThrottle

PREFIX = "/dashboard"
MAX_FORM_BYTES = 16 * 1024
REFRESH_SECONDS = 5
# Funding operations the form offers (RESET_SPENT needs a second amount; the API has it).
FORM_OPERATIONS = ("CREDIT", "DEBIT", "RESET", "REPAY_DEBT")

Handler = Callable[[Request], Awaitable[Response]]


class Refused(Exception):
    """A request the dashboard turns away with an HTML page (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the only kind the dashboard's forms send)."""
    try:
        body = await read_limited(request, MAX_FORM_BYTES)
    except ProtocolError as exc:
        raise Refused(exc.status, exc.message) from None
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _budget_field(form: dict[str, str], tenant: str) -> tuple[str, str]:
    """The form's ``budget`` field (``<scope>|<unit>``) as a normalised (scope, unit)."""
    scope, sep, unit = form.get("budget", "").rpartition("|")
    if not sep or not scope:
        raise invalid("choose a budget")
    return prov.normalize_scope(scope, tenant), prov.check_unit(unit)


def form_amount(text: str, unit: str) -> int:
    """An amount typed on the form: dollars for a money budget (``1.50``, ``$1.50``), an
    integer in the unit otherwise."""
    raw = text.strip()
    if unit == MONEY_UNIT and raw and raw.replace(",", "").replace(".", "", 1).isdigit():
        raw = "$" + raw  # a bare number on a dollar budget means dollars, never micro-cents
    try:
        return parse_amount(raw, unit)
    except ValueError as exc:
        raise invalid(str(exc)) from None


class Dashboard:
    """The dashboard of one app: its sessions and its routes."""

    def __init__(self) -> None:
        self._sessions: Sessions | None = None
        self._throttle: LoginThrottle | None = None

    def sessions(self, request: Request) -> Sessions:
        if self._sessions is None:
            svc = services(request)
            self._sessions = Sessions(svc.store, svc.settings.admin_api_key)
        return self._sessions

    def throttle(self, request: Request) -> LoginThrottle:
        if self._throttle is None:
            self._throttle = LoginThrottle(services(request).store)
        return self._throttle

    # -- plumbing -------------------------------------------------------------------------
    def guarded(self, fn: Callable[[Request, Viewer], Awaitable[Response]]) -> Handler:
        """A page that needs a viewer: browsers without a session go to the login form."""

        async def handler(request: Request) -> Response:
            who = await viewer(request, self.sessions(request))
            if who is None:
                if request.url.path.endswith("/live"):
                    return page("error.html", _error(401, "Signed out."), status=401)
                return _redirect(f"{PREFIX}/login")
            try:
                return await fn(request, who)
            except Refused as exc:
                return page(
                    "error.html",
                    {**_error(exc.status, exc.message), "viewer": who},
                    status=exc.status,
                )

        return handler

    async def _context(self, request: Request, who: Viewer) -> dict[str, Any]:
        flash = None
        if who.session is not None:
            flash = await self.sessions(request).pop_flash(who.session)
        return {
            "viewer": who,
            "csrf": who.session.csrf if who.session else "",
            "flash": flash,
            "refresh": REFRESH_SECONDS,
        }

    def _check_write(self, request: Request, who: Viewer, form: dict[str, str]) -> None:
        """CSRF defence for cookie-authenticated writes: same origin and the session's token.
        A header-authenticated write is refused only for a foreign Origin."""
        if who.session is None:
            if request.headers.get("origin") is not None and not same_origin(request):
                raise Refused(403, "Refused: the request comes from another origin.")
            return
        if not same_origin(request):
            raise Refused(403, "Refused: the request does not come from this dashboard.")
        if not csrf_ok(who.session, form.get("csrf")):
            raise Refused(403, "Refused: the form's CSRF token is missing or wrong.")

    # -- login / logout -------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        who = await viewer(request, self.sessions(request))
        if who is not None and who.session is not None:
            return _redirect(_home(who))
        return page("login.html", {"error": None, "viewer": None})

    async def login_submit(self, request: Request) -> Response:
        if not same_origin(request):
            return page("error.html", _error(403, "Refused: foreign origin."), status=403)
        throttle = self.throttle(request)
        address = client_ip(request)
        wait = await throttle.retry_after(address)
        if wait is not None:
            # Refused before the key is even looked at, so a blocked guesser learns nothing.
            error = f"Too many failed sign-ins from this address. Try again in {wait} s."
            return page(
                "login.html", {"error": error}, status=429, headers={"Retry-After": str(wait)}
            )
        form = await _form(request)
        who, cookie = await login(request, self.sessions(request), form.get("api_key", ""))
        if who is None:
            if form.get("api_key", "").strip():
                await throttle.failed(address)
            return page("login.html", {"error": cookie, "viewer": None}, status=401)
        await throttle.succeeded(address)
        response = _redirect(_home(who))
        set_cookie(response, request, cookie)
        return response

    async def logout(self, request: Request, who: Viewer) -> Response:
        form = await _form(request)
        self._check_write(request, who, form)
        if who.session is not None:
            await self.sessions(request).end(who.session)
        response = _redirect(f"{PREFIX}/login")
        clear_cookie(response, request)
        return response

    # -- pages ----------------------------------------------------------------------------
    async def tenants(self, request: Request, who: Viewer) -> Response:
        store = services(request).store
        rows = await data.tenant_summaries(store, None if who.is_admin else who.principal.tenant)
        if _wants_json(request):
            return JSONResponse({"tenants": [asdict(r) for r in rows]}, headers=SECURITY_HEADERS)
        return page("tenants.html", {**await self._context(request, who), "tenants": rows})

    async def _view(self, request: Request, who: Viewer) -> data.TenantView:
        tenant = request.path_params["tenant_id"]
        if not who.can_view(tenant):
            raise Refused(403, "This key may only see its own tenant.")
        window = request.query_params.get("window") or data.DEFAULT_WINDOW
        if window not in data.WINDOWS:
            window = data.DEFAULT_WINDOW
        view = await data.tenant_view(
            services(request).store,
            tenant,
            window=window,
            reservations=who.can_list_reservations(tenant),
        )
        if view is None:
            raise Refused(404, f"No tenant {tenant}.")
        return view

    async def tenant(self, request: Request, who: Viewer) -> Response:
        view = await self._view(request, who)
        if _wants_json(request):
            return JSONResponse(_view_json(view), headers=SECURITY_HEADERS)
        tenant = view.tenant["tenant_id"]
        ctx = {
            **await self._context(request, who),
            "view": view,
            "windows": list(data.WINDOWS),
            "operations": FORM_OPERATIONS,
            "can_fund": who.can_fund(tenant),
            "can_freeze": who.can_freeze(tenant),
            "form_key": secrets.token_urlsafe(16),
        }
        return page("tenant.html", ctx)

    async def tenant_live(self, request: Request, who: Viewer) -> Response:
        view = await self._view(request, who)
        return page("_live.html", {"view": view, "viewer": who})

    # -- actions --------------------------------------------------------------------------
    async def _act(
        self,
        request: Request,
        who: Viewer,
        operation: str,
        run: Callable[[dict[str, str], str], Awaitable[tuple[dict[str, Any], str]]],
    ) -> Response:
        """Check the write, run ``run(form, tenant)`` as an audited admin operation, answer
        JSON (scripts) or flash the outcome and go back to the tenant page (browsers)."""
        tenant = request.path_params["tenant_id"]
        form = await _form(request)
        self._check_write(request, who, form)
        if not who.can_view(tenant):
            raise Refused(403, "This key may only act on its own tenant.")
        done: dict[str, str] = {}

        async def operation_handler(req: Request) -> Response:
            budget = form.get("budget", "")
            req.scope.setdefault("state", {})["audit_resource_id"] = budget.partition("|")[0]
            body, message = await run(form, tenant)
            done["message"] = message
            return JSONResponse(body)

        back = f"{PREFIX}/tenants/{tenant}"
        try:
            response = await audited(operation, "budget")(operation_handler)(request)
        except ProtocolError as exc:
            if who.session is None:
                raise  # the API's error envelope, for scripts
            await self.sessions(request).flash(who.session, f"{exc.code}: {exc.message}", "error")
            return _redirect(back)
        if who.session is None:
            return response
        await self.sessions(request).flash(who.session, done["message"])
        return _redirect(back)

    async def fund(self, request: Request, who: Viewer) -> Response:
        store = services(request).store

        async def run(form: dict[str, str], tenant: str) -> tuple[dict[str, Any], str]:
            if not who.can_fund(tenant):
                raise ProtocolError("FORBIDDEN", "funding needs the admin key or budgets:write")
            scope, unit = _budget_field(form, tenant)
            operation = form.get("operation", "CREDIT")
            if operation not in FORM_OPERATIONS:
                raise invalid(f"operation must be one of {', '.join(FORM_OPERATIONS)}")
            amount = form_amount(form.get("amount", ""), unit)
            result = await prov.fund_budget(
                store,
                tenant,
                scope,
                unit,
                operation,
                amount,
                idempotency_key=form.get("form_key") or None,
            )
            message = (
                f"{operation} {money(amount, unit)} on {scope}: remaining "
                f"{money(result.previous_remaining, unit)} → {money(result.new_remaining, unit)}"
            )
            return fund_wire(result, unit), message

        return await self._act(request, who, "fundBudget", run)

    async def freeze(self, request: Request, who: Viewer) -> Response:
        store = services(request).store
        action = "unfreeze" if request.url.path.endswith("/unfreeze") else "freeze"

        async def run(form: dict[str, str], tenant: str) -> tuple[dict[str, Any], str]:
            if not who.can_freeze(tenant):
                raise ProtocolError("FORBIDDEN", f"{action} needs the admin key")
            scope, unit = _budget_field(form, tenant)
            record = await prov.update_budget(store, tenant, scope, unit, action)
            return budget_wire(record), f"{scope} ({unit}) is now {record.get('status', '')}"

        return await self._act(request, who, f"{action}Budget", run)

    def routes(self) -> list[BaseRoute]:
        g = self.guarded
        static = StaticFiles(packages=[("runcycles_server_lite.dashboard", "static")])
        return [
            Route(PREFIX, g(self.tenants), methods=["GET"]),
            Route(f"{PREFIX}/login", self.login_form, methods=["GET"]),
            Route(f"{PREFIX}/login", self.login_submit, methods=["POST"]),
            Route(f"{PREFIX}/logout", g(self.logout), methods=["POST"]),
            Route(f"{PREFIX}/tenants/{{tenant_id}}", g(self.tenant), methods=["GET"]),
            Route(f"{PREFIX}/tenants/{{tenant_id}}/live", g(self.tenant_live), methods=["GET"]),
            Route(f"{PREFIX}/tenants/{{tenant_id}}/fund", g(self.fund), methods=["POST"]),
            Route(f"{PREFIX}/tenants/{{tenant_id}}/freeze", g(self.freeze), methods=["POST"]),
            Route(f"{PREFIX}/tenants/{{tenant_id}}/unfreeze", g(self.freeze), methods=["POST"]),
            Mount(f"{PREFIX}/static", app=static, name="dashboard-static"),
        ]


def _home(who: Viewer) -> str:
    return PREFIX if who.is_admin else f"{PREFIX}/tenants/{who.principal.tenant}"


def _error(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "message": message, "viewer": None}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _view_json(view: data.TenantView) -> dict[str, Any]:
    """The tenant page as JSON (amounts as wire integers), for scripts."""
    return {
        "tenant": {k: view.tenant.get(k) for k in ("tenant_id", "name", "status")},
        "as_of_ms": view.now_ms,
        "budgets": [
            {**asdict(b), "utilization": b.utilization, "flags": b.flags} for b in view.budgets
        ],
        "reservations": None
        if view.reservations is None
        else [asdict(r) for r in view.reservations],
        "spend": {
            "window": view.window,
            "commits": view.commits_seen,
            "truncated": view.scan_truncated,
            "series": [asdict(s) | {"total": s.total} for s in view.spend],
        },
    }


def routes() -> list[BaseRoute]:
    """The dashboard's routes, mounted by :func:`runcycles_server_lite.app.create_app`."""
    return Dashboard().routes()
