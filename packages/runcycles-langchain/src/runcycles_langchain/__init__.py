"""Runtime budget enforcement for LangChain, LangGraph and LangChain v1 agents.

- :class:`CyclesCallbackHandler`: a callback for any chat model, chain or graph
  (``config={"callbacks": [CyclesCallbackHandler(...)]}``).
- :class:`CyclesMiddleware`: an ``AgentMiddleware`` for ``create_agent`` (needs the
  ``agents`` extra, i.e. the ``langchain`` package).
- :class:`BudgetExceededError`: what a denial raises through LangChain (a subclass of
  :class:`runcycles_core.BudgetExceededError`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runcycles_core.plugin import CyclesSettings, check_supported, needs_extra

from . import _quiet
from ._errors import BudgetExceededError
from ._handler import CyclesCallbackHandler
from ._supported import BELOW, FRAMEWORK, OLDEST

if TYPE_CHECKING:
    from ._middleware import CyclesMiddleware

__all__ = [
    "BudgetExceededError",
    "CyclesCallbackHandler",
    "CyclesMiddleware",
    "CyclesSettings",
]

check_supported("runcycles-langchain", FRAMEWORK, OLDEST, BELOW)
_quiet.install()


def __getattr__(name: str) -> Any:
    # The middleware needs the `langchain` package; import it only when asked for.
    if name == "CyclesMiddleware":
        with needs_extra("CyclesMiddleware", "runcycles-langchain[agents]", "langchain"):
            from ._middleware import CyclesMiddleware

        return CyclesMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
