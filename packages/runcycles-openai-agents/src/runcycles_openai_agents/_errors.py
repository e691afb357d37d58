"""The plugin's denial error."""

from __future__ import annotations

from agents.exceptions import AgentsException, RunErrorDetails

from runcycles_core import BudgetExceededError as CoreBudgetExceededError


class BudgetExceededError(CoreBudgetExceededError, AgentsException):
    """The budget authority denied a model or tool call of an OpenAI Agents run.

    A :class:`runcycles_core.BudgetExceededError` (so ``except`` clauses written for core keep
    working) and an ``agents.exceptions.AgentsException``: the SDK re-raises its own exception
    family unchanged where it would wrap any other exception raised by a tool hook in a
    ``UserError``, so a denial reaches the caller of ``Runner.run`` with this type intact.
    """

    # Core re-brands a denial without calling __init__, so the SDK's attribute needs a default.
    run_data: RunErrorDetails | None = None
