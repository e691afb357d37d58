"""Runtime budgets for CrewAI.

- :class:`CyclesLLM` wraps any CrewAI LLM: reserve before each call, commit the inner LLM's
  priced usage after, release on error.
- :func:`cycles_crew` gates a crew's steps and tools (scoped hooks) and records each step's
  tool usage (step callback), in one call.
- :class:`CrewBudgetExceeded` is what a denial raises: a ``runcycles_core.BudgetExceededError``
  and a ``crewai.hooks.HookAborted``, out of ``Crew.kickoff()`` unchanged and never retried.
- :func:`cycles_run` sets per-run subject overrides for the calls made inside it.
"""

from __future__ import annotations

from runcycles_core.plugin import check_supported

from . import _quiet
from ._crew import cycles_crew
from ._errors import CrewBudgetExceeded
from ._llm import CyclesLLM
from ._scope import CrewRun, StepRecord, current_run, cycles_run
from ._supported import BELOW, FRAMEWORK, OLDEST
from ._supported import REQUIREMENT as SUPPORTED
from ._usage import to_usage

__all__ = [
    "SUPPORTED",
    "CrewBudgetExceeded",
    "CrewRun",
    "CyclesLLM",
    "StepRecord",
    "__version__",
    "current_run",
    "cycles_crew",
    "cycles_run",
    "to_usage",
]

__version__ = "0.1.0"

check_supported("runcycles-crewai", FRAMEWORK, OLDEST, BELOW)
# A denial the caller handles is not logged by the framework on its way out.
_quiet.install()
