"""pytest fixtures for plugin tests: a real server-lite and a fresh tenant per test.

Load them from a plugin's ``tests/conftest.py``::

    pytest_plugins = ("runcycles_testing.fixtures",)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runcycles_server_lite.testing import ServerHandle, running_server

from .bench import Bench

__all__ = ["bench", "cycles_server"]


@pytest.fixture(scope="session")
def cycles_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One real server-lite (embedded Redis, or ``REDIS_URL`` under a fresh key prefix) for
    the whole session; tests isolate themselves by tenant."""
    with running_server(tmp_path_factory.mktemp("cycles-store")) as srv:
        yield srv


@pytest.fixture
def bench(cycles_server: ServerHandle, tmp_path: Path) -> Iterator[Bench]:
    """A fresh, not yet funded tenant on the session's server (see :class:`Bench`)."""
    b = Bench(cycles_server, tmp_path)
    try:
        yield b
    finally:
        b.close()
