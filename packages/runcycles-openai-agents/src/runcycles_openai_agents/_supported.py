"""The supported ``openai-agents`` range, declared once.

Read by the runtime check (:func:`runcycles_openai_agents._compat.check_supported`), by the nox
sessions that test both ends of the range, and by the test that keeps ``pyproject.toml`` equal.
Standard library only: the noxfile loads this file without installing the package.
"""

from __future__ import annotations

FRAMEWORK = "openai-agents"
OLDEST = "0.21.0"
"""Oldest tested release: the first to ship ``agents.testing`` (the SDK's ScriptedModel)."""
BELOW = "0.25"
"""First release not yet tested (0.x minors may break the Model and RunHooks interfaces)."""
REQUIREMENT = f"{FRAMEWORK}>={OLDEST},<{BELOW}"
