"""The shared contract suite every runcycles framework plugin runs, with its fixtures.

A plugin implements :class:`PluginAdapter` (building a :class:`Harness` on its framework's own
fake model) and subclasses :class:`ContractSuite`; its ``conftest.py`` loads the fixtures with
``pytest_plugins = ("runcycles_testing.fixtures",)``.
"""

from __future__ import annotations

from .adapter import (
    DEFAULT_USAGE,
    FAKE_FEATURES,
    SCENARIOS,
    FakeSpec,
    Harness,
    PluginAdapter,
    ProviderError,
)
from .bench import DEAD_URL, Bench
from .contract import ContractSuite

__all__ = [
    "DEAD_URL",
    "DEFAULT_USAGE",
    "FAKE_FEATURES",
    "SCENARIOS",
    "Bench",
    "ContractSuite",
    "FakeSpec",
    "Harness",
    "PluginAdapter",
    "ProviderError",
]
