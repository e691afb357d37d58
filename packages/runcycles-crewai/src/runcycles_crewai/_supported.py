"""The supported ``crewai`` range, declared once.

Read by the runtime check (:func:`runcycles_crewai._compat.check_supported`), by the nox
sessions that test both ends of the range, and by the test that keeps ``pyproject.toml`` equal.
Standard library only: the noxfile loads this file without installing the package.
"""

from __future__ import annotations

FRAMEWORK = "crewai"
OLDEST = "1.15.19"
"""Oldest tested release: the first that lets a ``HookAborted`` raised before an LLM call reach
the caller unchanged (earlier ones retry it three times and re-type it as ``ValueError``)."""
BELOW = "1.16"
"""First release not yet tested (the hooks and BaseLLM interfaces move between minors)."""
REQUIREMENT = f"{FRAMEWORK}>={OLDEST},<{BELOW}"
