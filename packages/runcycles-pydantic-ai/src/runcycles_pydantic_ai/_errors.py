"""The plugin's denial error."""

from __future__ import annotations

from runcycles_core.errors import BudgetExceededError as CoreBudgetExceededError

__all__ = ["BudgetExceededError"]


class BudgetExceededError(CoreBudgetExceededError):
    """A budget denial raised through Pydantic AI.

    Pydantic AI lets an exception raised by a capability's ``wrap_model_request`` or
    ``wrap_tool_execute`` end the run unchanged, so this reaches the caller of ``agent.run`` /
    ``run_sync`` / ``run_stream`` / ``iter`` before the model (or the tool) is called. Callers can
    ``except runcycles_pydantic_ai.BudgetExceededError`` (or core's base class) and read the
    server's ``error_code`` / ``reason_code`` on it.
    """
