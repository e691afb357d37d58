"""Run a real server-lite in-process for tests: real Redis, real HTTP on a loopback port.

Used by this package's tests and by every other package's end-to-end tests::

    with running_server(tmp_path) as srv:
        httpx.get(f"{srv.base_url}/actuator/health")

With ``REDIS_URL`` set, that Redis is used under a fresh key prefix (so runs never collide);
otherwise an embedded redis-server is started in ``data_dir``.

For tests that start processes of their own, :func:`spawn` / :func:`process_group` /
:func:`run` give each child its own process group and :func:`stop_group` stops that group as a
whole; :func:`wait_ready` polls readiness against :func:`start_timeout` (120 s, times
``$RUNCYCLES_TEST_TIMEOUT_SCALE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ._processes import (
    TIMEOUT_SCALE_ENV,
    group_members,
    http_ok,
    process_group,
    run,
    spawn,
    start_timeout,
    stop_group,
    wait_ready,
)
from ._serving import uvicorn_options
from .config import Settings

# The server, its store client and httpx load when a server is started, not at import: the
# process helpers above are all that test children and the recovery adapter use, and the rest
# is about 1.3 s of every such process's start.
if TYPE_CHECKING:
    import httpx
    import uvicorn

    from .embedded import EmbeddedRedis
    from .store import Store

__all__ = [
    "TIMEOUT_SCALE_ENV",
    "ServerHandle",
    "free_port",
    "group_members",
    "http_ok",
    "process_group",
    "run",
    "running_server",
    "spawn",
    "start_timeout",
    "stop_group",
    "wait_ready",
]

T = TypeVar("T")


def free_port() -> int:
    """A loopback port free right now (for a server a test starts as a subprocess)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerHandle:
    """A running server: where it listens and how to administer it."""

    base_url: str
    admin_api_key: str
    redis_url: str
    settings: Settings
    _server: uvicorn.Server = field(repr=False)

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"X-Admin-API-Key": self.admin_api_key}

    def admin_client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server that sends the admin key (close it, or use
        ``with``)."""
        headers = {**self.admin_headers, **kwargs.pop("headers", {})}
        import httpx

        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10, **kwargs)

    def run_store(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``await fn(store)`` against this server's Redis from sync or async code.

        It runs on a private thread and event loop, so it also works inside a running loop.
        """
        result: list[T] = []
        error: list[BaseException] = []

        async def go() -> None:
            from .store import Store
            from .webhooks.sealing import box_for

            store = Store.from_url(self.redis_url, prefix=self.settings.key_prefix)
            store.secret_box = box_for(self.settings.webhook_secret_key)
            try:
                result.append(await fn(store))
            finally:
                await store.close()

        def target() -> None:
            try:
                asyncio.run(go())
            except BaseException as exc:  # re-raised in the caller's thread
                error.append(exc)

        t = threading.Thread(target=target)
        t.start()
        t.join()
        if error:
            raise error[0]
        return result[0]

    def provision(
        self,
        tenant: str,
        budgets: Mapping[str, int] | None = None,
        *,
        unit: str = "USD_MICROCENTS",
        permissions: Iterable[str] | None = None,
        overdraft_limit: int = 0,
        commit_overage_policy: str | None = None,
        **tenant_settings: Any,
    ) -> str:
        """Create ``tenant`` (if new), a budget per ``{scope: allocated}`` in ``unit``, and a
        fresh API key; returns the key's secret. Scopes may omit the ``tenant:<id>/`` prefix."""
        from . import provisioning as prov

        async def go(store: Store) -> str:
            await prov.create_tenant(store, tenant, tenant, **tenant_settings)
            for scope, allocated in (budgets or {}).items():
                full = (
                    scope
                    if scope.startswith("tenant:")
                    else (f"tenant:{tenant}" + (f"/{scope}" if scope else ""))
                )
                await prov.create_budget(
                    store,
                    tenant,
                    full,
                    unit,
                    allocated,
                    overdraft_limit=overdraft_limit,
                    commit_overage_policy=commit_overage_policy,
                )
            key = await prov.create_api_key(store, tenant, "test", permissions=permissions)
            return key.secret

        return self.run_store(go)


def _serve_in_thread(
    settings: Settings, limit: float
) -> tuple[uvicorn.Server, threading.Thread, int]:
    import uvicorn

    from .app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        access_log=False,
        **uvicorn_options(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="runcycles-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + limit
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            timed_out = thread.is_alive()
            server.should_exit = True  # a late start must not leave it serving
            thread.join(timeout=start_timeout(15))
            why = f"not started within {limit:g} s ({TIMEOUT_SCALE_ENV} scales it)"
            raise RuntimeError(f"test server failed to start: {why if timed_out else 'exited'}")
        time.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, port


@contextlib.contextmanager
def running_server(
    data_dir: Path | str, *, start_within: float | None = None, **overrides: object
) -> Iterator[ServerHandle]:
    """Start server-lite for the duration of the ``with`` block.

    ``overrides`` set :class:`Settings` fields (e.g. ``sweep_interval_s=0.1``). The server must
    be serving within ``start_within`` seconds (default :func:`start_timeout`); if it is not,
    everything started so far (the embedded store included) is stopped and
    :class:`RuntimeError` raised.
    """
    data_dir = Path(data_dir)
    settings = Settings(data_dir=data_dir, admin_api_key="test-admin-" + secrets.token_hex(8))
    for name, value in overrides.items():
        setattr(settings, name, value)
    embedded: EmbeddedRedis | None = None
    external = os.environ.get("REDIS_URL")
    if settings.redis_url is None and external:
        settings.redis_url = external
        settings.key_prefix = "rctest" + secrets.token_hex(4)
    elif settings.redis_url is None:
        from .embedded import EmbeddedRedis

        embedded = EmbeddedRedis(data_dir, own_group=True).start()
        settings.redis_url = embedded.url
    try:
        limit = start_timeout() if start_within is None else start_within
        server, thread, port = _serve_in_thread(settings, limit)
        try:
            assert settings.admin_api_key is not None
            yield ServerHandle(
                base_url=f"http://127.0.0.1:{port}",
                admin_api_key=settings.admin_api_key,
                redis_url=settings.redis_url,
                settings=settings,
                _server=server,
            )
        finally:
            server.should_exit = True
            thread.join(timeout=start_timeout(15))
    finally:
        if embedded is not None:
            embedded.stop()
