"""Jinja2 rendering for the dashboard: the template environment, its filters, and the
security headers every dashboard page carries.

Templates live in ``templates/`` and are loaded from the installed package, autoescaped.
Amounts are formatted with :func:`runcycles_core.amounts.format_amount` (dollars for
``USD_MICROCENTS``, grouped integers with the unit otherwise), the same text the CLI and the
denial messages use.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

from runcycles_core.amounts import MONEY_UNIT, format_amount

# Only this server's own files: no CDN, no inline script, no framing. Inline SVG attributes
# (the utilisation bars) need no style-src exception.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show balances and carry the CSRF token: never from a cache.
    "Cache-Control": "no-store",
}


def money(amount: int, unit: str) -> str:
    """``$1.50`` for USD_MICROCENTS, ``1,200 TOKENS`` for the other units."""
    return format_amount(int(amount), unit)


def bare(amount: int, unit: str) -> str:
    """The amount without the unit name (the unit is in its own column): ``$1.50``,
    ``1,200``."""
    return format_amount(int(amount), unit) if unit == MONEY_UNIT else f"{int(amount):,}"


def percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def bar_width(value: float) -> str:
    """Utilisation as an SVG width out of 100, capped (an over-limit scope fills the bar)."""
    return f"{max(0.0, min(value, 1.0)) * 100:.1f}"


def duration(ms: int) -> str:
    """A TTL for people: ``45s``, ``12m 05s``, ``2h 03m``."""
    seconds = max(int(ms) // 1000, 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def clock(ms: int | str | None) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if ms is None or ms == "":
        return ""
    dt = datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("runcycles_server_lite.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=money, bare=bare, percent=percent, bar_width=bar_width, duration=duration
    )
    env.filters["clock"] = clock
    env.globals["MONEY_UNIT"] = MONEY_UNIT
    return env


_ENV: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    """The shared environment (templates compile once per process)."""
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV


def page(
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A rendered template with the dashboard's security headers."""
    # What base.html reads on every page, for pages rendered without a signed-in viewer.
    defaults: dict[str, Any] = {"viewer": None, "flash": None, "csrf": "", "error": None}
    html = environment().get_template(template).render(**{**defaults, **context})
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
