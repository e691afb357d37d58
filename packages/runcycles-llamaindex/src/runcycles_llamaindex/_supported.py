"""The supported ``llama-index-core`` range, declared once.

Read by the nox sessions that test both ends of the range (``llamaindex(oldest)`` installs
``OLDEST``, ``llamaindex(latest)`` the newest locked) and by the test that keeps
``pyproject.toml`` equal. Standard library only: the noxfile loads this file without installing
the package.
"""

from __future__ import annotations

FRAMEWORK = "llama-index-core"
OLDEST = "0.14.0"
"""Oldest tested release: the first on llama-index-workflows 2, whose agent runs re-raise a
step's exception unchanged (workflows 1.x, under core 0.13, wraps a denial in
``WorkflowRuntimeError``)."""
BELOW = "0.15"
"""First release not yet tested (0.x minors may change the callback and agent interfaces)."""
REQUIREMENT = f"{FRAMEWORK}>={OLDEST},<{BELOW}"
