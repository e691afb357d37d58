"""One way to configure every entry point: ``settings=`` or the CyclesSettings keywords."""

from __future__ import annotations

from typing import Any

from runcycles_core.plugin import CyclesSettings
from runcycles_core.plugin import resolve_settings as kit_resolve

from ._errors import CrewBudgetExceeded


def resolve_settings(settings: CyclesSettings | None, kwargs: dict[str, Any]) -> CyclesSettings:
    """The kit's resolution with :class:`CrewBudgetExceeded` as the denial type; a denial type
    that is not a ``HookAborted`` is refused (CrewAI would retry it instead of stopping)."""
    resolved = kit_resolve(settings, kwargs, denial_error=CrewBudgetExceeded)
    if resolved.denial_error is None or not issubclass(resolved.denial_error, CrewBudgetExceeded):
        raise TypeError(
            "denial_error must subclass runcycles_crewai.CrewBudgetExceeded: any other type "
            "is retried by CrewAI's agents instead of stopping the run"
        )
    return resolved
