"""One way to configure every entry point: ``settings=`` or the CyclesSettings keywords."""

from __future__ import annotations

import dataclasses
from typing import Any

from runcycles_core.integration import CyclesSettings

from ._errors import CrewBudgetExceeded


def resolve_settings(settings: CyclesSettings | None, kwargs: dict[str, Any]) -> CyclesSettings:
    """``settings`` or ``CyclesSettings(**kwargs)``, raising denials as
    :class:`CrewBudgetExceeded` unless the user chose another subclass."""
    if settings is not None and kwargs:
        raise TypeError("pass settings= or CyclesSettings keyword arguments, not both")
    resolved = settings if settings is not None else CyclesSettings(**kwargs)
    if resolved.denial_error is None:
        # A copy sharing the derived clients: the caller's settings object is left as given.
        resolved = dataclasses.replace(resolved, denial_error=CrewBudgetExceeded)
    elif not issubclass(resolved.denial_error, CrewBudgetExceeded):
        raise TypeError(
            "denial_error must subclass runcycles_crewai.CrewBudgetExceeded: any other type "
            "is retried by CrewAI's agents instead of stopping the run"
        )
    return resolved
