"""The plugin's denial error."""

from __future__ import annotations

from crewai.hooks import HookAborted

from runcycles_core import BudgetExceededError as CoreBudgetExceededError


class CrewBudgetExceeded(CoreBudgetExceededError, HookAborted):
    """The budget authority denied an LLM call, a step or a tool call of a CrewAI run.

    A :class:`runcycles_core.BudgetExceededError` (so ``except`` clauses written for core keep
    working) and a ``crewai.hooks.HookAborted``: CrewAI (>= 1.15.19) lets its own abort type out
    of ``Crew.kickoff()`` unchanged and never retries it, where any other exception raised
    around an LLM call is retried by the agent (and one raised in a hook is swallowed).
    """

    # Core re-brands a denial without calling __init__, so HookAborted's attributes need
    # class-level defaults.
    reason: str = "budget denied"
    source: str | None = "runcycles"

    def __str__(self) -> str:
        return CoreBudgetExceededError.__str__(self)
