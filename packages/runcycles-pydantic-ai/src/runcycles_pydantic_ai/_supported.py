"""The supported ``pydantic-ai-slim`` range, declared once.

Read by the runtime check (``runcycles_core.plugin.check_supported``), by the nox sessions that
test both ends of the range (``pydantic_ai(oldest)`` installs ``OLDEST``, ``pydantic_ai(latest)``
the newest locked) and by the test that keeps ``pyproject.toml`` equal. Standard library only:
the noxfile loads this file without installing the package.
"""

from __future__ import annotations

FRAMEWORK = "pydantic-ai-slim"
OLDEST = "1.71.0"
"""Oldest tested release: the first with capabilities (``AbstractCapability.wrap_model_request``
and ``wrap_tool_execute``). ``ModelRequestContext.model`` only exists from 1.73.0; before it the
run context's model is used."""
BELOW = "3"
"""First release not yet tested (the capability hooks are stable within a major)."""
REQUIREMENT = f"{FRAMEWORK}>={OLDEST},<{BELOW}"
LATEST_PYTHON = "3.11"
"""The oldest Python the newest releases install on: pydantic-ai-slim 2.55.0 and later declare
``Requires-Python >=3.11`` (on 3.10 the newest installable release is 2.54.x)."""
