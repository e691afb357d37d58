"""The plugin's denial error."""

from __future__ import annotations

from runcycles_core.errors import BudgetExceededError as CoreBudgetExceededError

__all__ = ["BudgetExceededError"]


class BudgetExceededError(CoreBudgetExceededError):
    """A budget denial raised through LangChain.

    LangChain re-raises a callback's exception unchanged when the handler has
    ``raise_error = True``, and LangGraph / ``create_agent`` propagate it out of ``invoke``,
    so callers can ``except runcycles_langchain.BudgetExceededError`` (or core's base class)
    and read the server's ``error_code`` / ``reason_code`` on it.
    """
