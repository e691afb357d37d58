"""Runtime budgets for the OpenAI Agents SDK.

- :class:`CyclesModel` wraps any ``agents`` Model: reserve before each call, commit the priced
  usage after, settle abandoned streams; :class:`CyclesModelProvider` does it for agents
  configured by model name.
- :class:`CyclesRunHooks` does the same through ``Runner.run(..., hooks=...)`` and gates tools.
- :class:`BudgetExceededError` is what a denial raises, out of ``Runner.run`` unchanged.
- :func:`cycles_run` names a run (stable idempotency keys) and sets per-run subject overrides.
"""

from __future__ import annotations

from runcycles_core.plugin import check_supported

from ._errors import BudgetExceededError
from ._hooks import CyclesRunHooks, CyclesRunResultStreaming
from ._model import CyclesModel, CyclesModelProvider
from ._scope import RunScope, cycles_run
from ._supported import BELOW, FRAMEWORK, OLDEST
from ._supported import REQUIREMENT as SUPPORTED
from ._usage import to_usage

__all__ = [
    "SUPPORTED",
    "BudgetExceededError",
    "CyclesModel",
    "CyclesModelProvider",
    "CyclesRunHooks",
    "CyclesRunResultStreaming",
    "RunScope",
    "__version__",
    "cycles_run",
    "to_usage",
]

__version__ = "0.1.0"

check_supported("runcycles-openai-agents", FRAMEWORK, OLDEST, BELOW)
