"""The web dashboard served under ``/dashboard``: tenants, scope trees in dollars, active
reservations, spend over time, and the fund / freeze admin actions.

Server-rendered with Jinja2 from the package's own templates, CSS and JS (no external
assets). Browsers sign in once with the admin key or a tenant key and keep a signed HttpOnly
session cookie; scripts send the API headers instead.
"""

from __future__ import annotations

from .routes import Dashboard, routes

__all__ = ["Dashboard", "routes"]
