"""The plugin's denial error."""

from __future__ import annotations

from runcycles_core.errors import BudgetExceededError as CoreBudgetExceededError

__all__ = ["BudgetExceededError"]


class BudgetExceededError(CoreBudgetExceededError):
    """A budget denial raised through LlamaIndex.

    LlamaIndex's legacy ``CallbackManager`` calls handlers without catching their exceptions,
    and the agent workflows re-raise a failed step's exception from ``await handler``, so this
    reaches the caller of ``llm.chat`` / ``agent.run`` unchanged, before the provider is
    called. Callers can ``except runcycles_llamaindex.BudgetExceededError`` (or core's base
    class) and read the server's ``error_code`` / ``reason_code`` on it.
    """
