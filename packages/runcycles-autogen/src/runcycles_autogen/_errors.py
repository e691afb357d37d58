"""The plugin's denial error."""

from __future__ import annotations

from runcycles_core.errors import BudgetExceededError as CoreBudgetExceededError

__all__ = ["BudgetExceededError"]


class BudgetExceededError(CoreBudgetExceededError):
    """The budget authority denied a model call (or a tool call) of an AutoGen agent or team.

    A :class:`runcycles_core.BudgetExceededError`, so ``except`` clauses written for core keep
    working, with the server's ``error_code`` / ``reason_code``. ``AssistantAgent.run`` and
    ``run_stream`` let it through unchanged. AutoGen's teams turn any agent error into a bare
    ``RuntimeError("BudgetExceededError: ...")`` with no cause; run the team inside
    :func:`~runcycles_autogen.cycles_run` (or with :func:`~runcycles_autogen.run_team`) to get
    this type back.
    """
