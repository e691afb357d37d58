"""Runtime budgets for AutoGen (autogen-agentchat / autogen-core 0.7).

- :class:`CyclesChatCompletionClient` wraps any ``ChatCompletionClient``: reserve before each
  ``create`` / ``create_stream``, commit the priced ``CreateResult.usage``, release on error.
- :class:`CyclesWorkbench` gates tool calls as action kind ``tool.<name>`` without ever raising
  (a raising workbench hangs ``AssistantAgent``): a denied tool returns an error result and
  the next model call raises the denial.
- :func:`cycles_run` / :func:`run_team` / :func:`run_team_stream` scope a run: per-run subject,
  the typed :class:`BudgetExceededError` back from a team's ``RuntimeError``, and streams a
  consumer abandoned settled when the run ends. :func:`unwrap_team_error` does the unwrapping
  for code that runs a team outside them.
- :func:`selector_group_chat` budgets ``SelectorGroupChat``'s own speaker-selection client.
"""

from __future__ import annotations

from runcycles_core.plugin import CyclesSettings, check_supported

from . import _supported
from ._client import CyclesChatCompletionClient
from ._errors import BudgetExceededError
from ._run import run_team, run_team_stream, selector_group_chat
from ._scope import CyclesRun, current_run, cycles_run, unwrap_team_error
from ._workbench import CyclesWorkbench

__all__ = [
    "BudgetExceededError",
    "CyclesChatCompletionClient",
    "CyclesRun",
    "CyclesSettings",
    "CyclesWorkbench",
    "__version__",
    "current_run",
    "cycles_run",
    "run_team",
    "run_team_stream",
    "selector_group_chat",
    "unwrap_team_error",
]

__version__ = "0.1.0"

check_supported("runcycles-autogen", _supported.FRAMEWORK, _supported.OLDEST, _supported.BELOW)
