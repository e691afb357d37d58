from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from runcycles_server_lite.testing import ServerHandle, running_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One real server-lite (embedded Redis or REDIS_URL) for the whole test session."""
    with running_server(tmp_path_factory.mktemp("store")) as srv:
        yield srv


@pytest.fixture
def http(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client
