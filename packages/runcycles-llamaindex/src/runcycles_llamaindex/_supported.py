"""The supported ``llama-index-core`` range, declared once.

Read by the nox sessions that test both ends of the range (``llamaindex(oldest)`` installs
``OLDEST``, ``llamaindex(latest)`` the newest locked) and by the test that keeps
``pyproject.toml`` equal. Standard library only: the noxfile loads this file without installing
the package.
"""

from __future__ import annotations

FRAMEWORK = "llama-index-core"
OLDEST = "0.13.0"
"""Oldest tested release (the legacy callback gate and the agent workflows are both present)."""
BELOW = "0.15"
"""First release not yet tested (0.x minors may change the callback and agent interfaces)."""
REQUIREMENT = f"{FRAMEWORK}>={OLDEST},<{BELOW}"
