"""Runtime budget enforcement for LlamaIndex LLMs, agents and tools.

- :class:`CyclesCallbackHandler`: a legacy callback handler that reserves before every LLM
  call and commits its priced usage (``CallbackManager([CyclesCallbackHandler(...)])``).
- :class:`CyclesTool` / :func:`cycles_tools`: gate tool calls as action kind ``tool.<name>``.
- :func:`cycles_run`: per-run subject levels and dimensions.
- :class:`BudgetExceededError`: what a denial raises through LlamaIndex (a subclass of
  :class:`runcycles_core.BudgetExceededError`).
"""

from __future__ import annotations

from runcycles_core.plugin import CyclesSettings, check_supported

from . import _supported
from ._errors import BudgetExceededError
from ._handler import CyclesCallbackHandler
from ._scope import cycles_run
from ._tools import CyclesTool, cycles_tools

__all__ = [
    "BudgetExceededError",
    "CyclesCallbackHandler",
    "CyclesSettings",
    "CyclesTool",
    "cycles_run",
    "cycles_tools",
]

check_supported("runcycles-llamaindex", _supported.FRAMEWORK, _supported.OLDEST, _supported.BELOW)
