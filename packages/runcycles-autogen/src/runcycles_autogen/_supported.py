"""The supported AutoGen range, declared once.

Read by the runtime check at import, by the nox sessions that test both ends of the range
(``autogen(oldest)`` installs ``OLDEST``, ``autogen(latest)`` the newest locked) and by the test
that keeps ``pyproject.toml`` equal. Standard library only: the noxfile loads this file without
installing the package.
"""

from __future__ import annotations

FRAMEWORK = "autogen-agentchat"
CORE_FRAMEWORK = "autogen-core"
OLDEST = "0.7.0"
"""Oldest tested release (agentchat and core are released in lockstep). The
``ChatCompletionClient`` interface is unchanged since 0.4.9, but teams have turned an agent's
exception into a bare ``RuntimeError`` since 0.5, and ``AssistantAgent`` hangs on a raising
``Workbench`` since 0.6: the 0.7 line is what this plugin is written and tested against."""
BELOW = "0.8"
"""First release not yet tested (0.x minors change the agent and team internals)."""
REQUIREMENT = f"{FRAMEWORK}>={OLDEST},<{BELOW}"
CORE_REQUIREMENT = f"{CORE_FRAMEWORK}>={OLDEST},<{BELOW}"
