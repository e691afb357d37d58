"""One way to configure every entry point: ``settings=`` or the CyclesSettings keywords."""

from __future__ import annotations

import dataclasses
from typing import Any

from runcycles_core.plugin import CyclesSettings

from ._errors import BudgetExceededError


def resolve_settings(settings: CyclesSettings | None, kwargs: dict[str, Any]) -> CyclesSettings:
    """``settings`` or ``CyclesSettings(**kwargs)``, raising denials as this plugin's
    :class:`BudgetExceededError` unless the user chose another subclass."""
    if settings is not None and kwargs:
        raise TypeError("pass settings= or CyclesSettings keyword arguments, not both")
    resolved = settings if settings is not None else CyclesSettings(**kwargs)
    if resolved.denial_error is None:
        # A copy sharing the derived clients: the caller's settings object is left as given.
        resolved = dataclasses.replace(resolved, denial_error=BudgetExceededError)
    return resolved
