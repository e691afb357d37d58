"""The conformance suite stops before collecting anything when the spec folder is missing."""

from __future__ import annotations

import pytest
from upstream import spec_dir


def pytest_configure(config: pytest.Config) -> None:
    try:
        folder = spec_dir()
    except FileNotFoundError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SPEC_KEY] = str(folder)


SPEC_KEY = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"upstream spec: {config.stash[SPEC_KEY]}"
