"""CrewAI stays offline and quiet in tests; the server-lite fixtures come from runcycles-testing."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before crewai is imported anywhere: no telemetry, no tracing, no prompts.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_DISABLE_TRACKING", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

from crewai.hooks import clear_all_global_hooks

pytest_plugins = ("runcycles_testing.fixtures",)


@pytest.fixture(autouse=True)
def _no_global_hooks() -> Iterator[None]:
    # The plugin registers only scoped hooks; a global leftover would be a bug, so fail on it.
    yield
    from crewai.hooks.dispatch import InterceptionPoint, get_hooks

    leftovers = {p.value: get_hooks(p) for p in InterceptionPoint if get_hooks(p)}
    clear_all_global_hooks()
    assert not leftovers, leftovers
