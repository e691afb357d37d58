"""Runtime budget enforcement for Pydantic AI agents.

- :class:`CyclesCapability`: an agent capability that reserves before every model request and
  commits its priced usage, and gates tool calls as action kind ``tool.<name>``
  (``Agent(..., capabilities=[CyclesCapability()])``).
- :func:`cycles_metadata`: per-run subject levels and dimensions, as run ``metadata``.
- :class:`BudgetExceededError`: what a denial raises out of the run (a subclass of
  :class:`runcycles_core.BudgetExceededError`).
"""

from __future__ import annotations

from runcycles_core.plugin import CyclesSettings, check_supported

from . import _supported
from ._capability import CyclesCapability
from ._errors import BudgetExceededError
from ._scope import cycles_metadata

__all__ = [
    "BudgetExceededError",
    "CyclesCapability",
    "CyclesSettings",
    "cycles_metadata",
]

check_supported("runcycles-pydantic-ai", _supported.FRAMEWORK, _supported.OLDEST, _supported.BELOW)
