"""The ``runcycles-server-lite`` console script. Serving is the default action."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from . import logs
from ._serving import uvicorn_options
from .config import (
    ADMIN_KEY_FILE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    DEFAULT_URL,
    WEBHOOK_KEY_FILE,
    Settings,
    days_ms,
    default_data_dir,
)
from .keys import UNITS

# httpx imports its own command-line client (click, rich, pygments: about 0.35 s) whenever
# those are installed, as they are here (uvicorn needs click, the admin commands rich). This
# console script never runs httpx's CLI, so its processes (admin commands, each server worker)
# mark that module absent, a case httpx handles, before anything imports httpx.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: "absent"

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from .embedded import EmbeddedRedis

log = logging.getLogger("runcycles_server_lite.cli")

# How long an admin command waits for the server to answer: a cold start on a loaded machine
# takes seconds, and a script's next line often runs while the server is still starting.
DEFAULT_WAIT_S = 60.0


def _serve_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--admin-port", type=int, default=None, help="also serve the admin plane on this port"
    )
    p.add_argument("--data-dir", type=Path, default=None, help="embedded store directory")
    p.add_argument(
        "--redis-url", default=None, help="external Redis (else REDIS_URL, else embedded)"
    )
    p.add_argument("--workers", type=int, default=None, help="worker processes (default 1)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default=None,
        choices=["json", "text"],
        help="log lines as JSON (default off a terminal) or text",
    )
    p.add_argument(
        "--finalized-retention-days",
        type=float,
        default=None,
        help="keep finalized reservations readable this long (default 30; "
        "RUNCYCLES_FINALIZED_RETENTION_DAYS)",
    )
    p.add_argument(
        "--idempotency-retention-days",
        type=float,
        default=None,
        help="keep idempotency records this long after finalization, at most the finalized "
        "retention (default 30; RUNCYCLES_IDEMPOTENCY_RETENTION_DAYS)",
    )
    p.add_argument(
        "--proxy-headers",
        action="store_true",
        default=None,
        help="trust X-Forwarded-* headers (only behind a reverse proxy)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help=f"largest request body; over it a 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="close idle keep-alive connections after SECONDS (default 5)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="close connections that take longer to send request headers (default 10; 0: off)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="open connections per process before every request gets a 503 (default 1024; "
        "0: no cap)",
    )
    p.add_argument(
        "--max-inflight",
        type=int,
        default=None,
        metavar="N",
        help="requests handled at once per process before a 503; health checks are exempt "
        "(default 512; 0: no cap)",
    )
    p.add_argument(
        "--fsync",
        default=None,
        choices=["always", "everysec"],
        help="embedded store AOF fsync policy (default everysec)",
    )
    p.add_argument(
        "--allow-volatile-store",
        action="store_true",
        default=None,
        help="serve even if the external Redis has AOF off (a restart loses the ledger)",
    )


def _client_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=None,
        help=f"server base URL (else RUNCYCLES_URL, else {DEFAULT_URL})",
    )
    p.add_argument(
        "--admin-key",
        default=None,
        help="admin API key (else ADMIN_API_KEY, else the data dir's admin-api-key file)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"wait up to SECONDS for the server to answer (default {DEFAULT_WAIT_S:g}; "
        "0: fail at once)",
    )
    # SUPPRESS keeps a --data-dir given before the subcommand (argparse would otherwise reset
    # it to this parser's default).
    p.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="where to find the generated admin key",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runcycles-server-lite",
        description="Cycles Protocol v0 budget authority (runtime + admin plane). "
        "With no command it serves; the other commands call a running server's admin API.",
    )
    _serve_parser(parser)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the API (the default)")
    _serve_parser(serve)

    tenant = sub.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="action", required=True
    )
    p = tenant.add_parser("create", help="create a tenant (idempotent)")
    p.add_argument("tenant_id")
    p.add_argument("--name", default=None, help="display name (default: the id)")
    _client_parser(p)

    key = sub.add_parser("key", help="manage API keys").add_subparsers(dest="action", required=True)
    p = key.add_parser("create", help="mint an API key and print its secret")
    p.add_argument("tenant_id")
    p.add_argument("--name", default="cli", help="key name (default: cli)")
    p.add_argument(
        "--profile",
        choices=["agent", "operator"],
        default="agent",
        help="agent (default): runtime permissions only, for an agent's key; operator: the "
        "spec's tenant set, which also writes budgets and policies",
    )
    p.add_argument(
        "--permission",
        action="append",
        default=None,
        help="grant exactly these permissions instead of a profile (repeatable)",
    )
    _client_parser(p)

    budget = sub.add_parser("budget", help="manage budgets").add_subparsers(
        dest="action", required=True
    )
    p = budget.add_parser("set", help="create a budget, or reset its allocation to AMOUNT")
    p.add_argument("scope", help="scope path, e.g. tenant:acme/workspace:prod")
    p.add_argument(
        "amount",
        help="allocation: dollars ($1.50, 1.50 USD) for USD_MICROCENTS, or an integer in the unit",
    )
    p.add_argument("--unit", default="USD_MICROCENTS", choices=list(UNITS))
    p.add_argument("--tenant", default=None, help="tenant id (default: from the scope)")
    _client_parser(p)

    p = sub.add_parser("balances", help="show a tenant's budgets")
    p.add_argument("tenant_id")
    _client_parser(p)
    return parser


def settings_from_args(ns: argparse.Namespace) -> Settings:
    s = Settings.from_env()
    if ns.host is not None:
        s.host = ns.host
    if ns.port is not None:
        s.port = ns.port
    if ns.admin_port is not None:
        s.admin_port = ns.admin_port
    if ns.data_dir is not None:
        s.data_dir = ns.data_dir
    if ns.redis_url is not None:
        s.redis_url = ns.redis_url
    if ns.workers is not None:
        s.workers = max(1, ns.workers)
    if ns.log_level is not None:
        s.log_level = ns.log_level
    if getattr(ns, "log_format", None) is not None:
        s.log_format = ns.log_format
    if getattr(ns, "proxy_headers", None):
        s.proxy_headers = True
    if getattr(ns, "max_body_bytes", None) is not None:
        s.max_body_bytes = ns.max_body_bytes
    if getattr(ns, "keep_alive_timeout", None) is not None:
        s.keep_alive_timeout_s = ns.keep_alive_timeout
    if getattr(ns, "header_timeout", None) is not None:
        s.header_timeout_s = ns.header_timeout
    if getattr(ns, "max_connections", None) is not None:
        s.max_connections = ns.max_connections
    if getattr(ns, "max_inflight", None) is not None:
        s.max_inflight = ns.max_inflight
    if getattr(ns, "fsync", None) is not None:
        s.fsync = ns.fsync
    if getattr(ns, "allow_volatile_store", None):
        s.allow_volatile_store = True
    if getattr(ns, "finalized_retention_days", None) is not None:
        s.finalized_retention_ms = days_ms(ns.finalized_retention_days)
    if getattr(ns, "idempotency_retention_days", None) is not None:
        s.idempotency_retention_ms = days_ms(ns.idempotency_retention_days)
    return s


def _kept_secret(settings: Settings, name: str, make: Callable[[], str]) -> tuple[str, bool]:
    """The secret in the data dir's file ``name``, made with ``make`` and written (0600,
    never over an existing file) on first start. Returns (secret, newly_created)."""
    path = settings.data_dir / name
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
    return secret, True


def ensure_admin_key(settings: Settings) -> tuple[str, bool]:
    """The embedded-mode admin key: ADMIN_API_KEY if set, else one generated on first start
    and kept (0600) in the data dir. Returns (key, newly_created)."""
    if settings.admin_api_key:
        return settings.admin_api_key, False
    return _kept_secret(settings, ADMIN_KEY_FILE, lambda: "cyc_admin_" + secrets.token_urlsafe(24))


def ensure_webhook_key(settings: Settings) -> str:
    """The embedded-mode key sealing webhook secrets: WEBHOOK_SECRET_ENCRYPTION_KEY if set,
    else one generated on first start and kept (0600) in the data dir beside the admin key."""
    if settings.webhook_secret_key:
        return settings.webhook_secret_key
    from .webhooks.sealing import new_key

    return _kept_secret(settings, WEBHOOK_KEY_FILE, new_key)[0]


def _export(settings: Settings) -> None:
    # Worker processes rebuild Settings from the environment (see app_factory).
    os.environ["REDIS_URL"] = settings.redis_url or ""
    os.environ["RUNCYCLES_KEY_PREFIX"] = settings.key_prefix
    if settings.admin_api_key:
        os.environ["ADMIN_API_KEY"] = settings.admin_api_key
    if settings.webhook_secret_key:
        os.environ["WEBHOOK_SECRET_ENCRYPTION_KEY"] = settings.webhook_secret_key
    os.environ["RUNCYCLES_DATA_DIR"] = str(settings.data_dir)
    os.environ["RUNCYCLES_LOG_LEVEL"] = settings.log_level
    if settings.log_format:
        os.environ["RUNCYCLES_LOG_FORMAT"] = settings.log_format
    os.environ["RUNCYCLES_MAX_BODY_BYTES"] = str(settings.max_body_bytes)
    os.environ["RUNCYCLES_MAX_INFLIGHT"] = str(settings.max_inflight)
    day = 86_400_000
    os.environ["RUNCYCLES_FINALIZED_RETENTION_DAYS"] = repr(settings.finalized_retention_ms / day)
    os.environ["RUNCYCLES_IDEMPOTENCY_RETENTION_DAYS"] = repr(
        settings.idempotency_retention_ms / day
    )


def _log_format(settings: Settings) -> logs.LogFormat | None:
    return "json" if settings.log_format == "json" else "text" if settings.log_format else None


def app_factory() -> Starlette:
    """uvicorn factory for worker processes: settings come from the environment."""
    from .app import create_app

    _exit_with_main_process()
    settings = Settings.from_env()
    logs.configure(settings.log_level, _log_format(settings))  # each worker process
    return create_app(settings)


def _exit_with_main_process() -> None:
    """In a ``--workers N`` worker: have the kernel SIGTERM this worker when the main process
    dies. Killed with -9, the main process cannot stop its workers, and they kept serving
    (and holding the port) as orphans, so a restart on the same port was refused."""
    import multiprocessing

    if multiprocessing.parent_process() is None:
        return  # one worker: uvicorn serves in the main process itself
    from .embedded import _die_with_parent

    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the main process died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def serve(settings: Settings) -> int:
    import uvicorn

    logs.configure(settings.log_level, _log_format(settings))
    from ._ports import busy_port_message

    busy = busy_port_message(settings)
    if busy is not None:  # before the store starts and the banner claims the address
        print(busy, file=sys.stderr)
        return 3
    if settings.webhook_secret_key:
        from .webhooks.sealing import SecretBox

        try:
            SecretBox.from_text(settings.webhook_secret_key)
        except ValueError as exc:  # before anything starts: the app would refuse the key
            print(f"runcycles-server-lite: {exc}", file=sys.stderr)
            return 2
    from .embedded import EmbeddedRedis

    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(
            settings.data_dir or default_data_dir(), appendfsync=settings.fsync
        ).start()
        settings.redis_url = embedded.url
        key, created = ensure_admin_key(settings)
        settings.admin_api_key = key
        settings.webhook_secret_key = ensure_webhook_key(settings)
        if created:
            where = settings.data_dir / ADMIN_KEY_FILE
            print(f"Generated admin API key (shown once; kept in {where}):")
            print(f"  X-Admin-API-Key: {key}")
    else:
        # An external store: refuse one that loses the ledger on restart (SystemExit).
        from ._persistence import check_store  # redis-py: only the server needs it

        check_store(settings.redis_url, allow_volatile=settings.allow_volatile_store)
        if not settings.admin_api_key:
            log.warning("ADMIN_API_KEY is not set: the admin plane will refuse every request")
        if not settings.webhook_secret_key:
            log.warning(
                "WEBHOOK_SECRET_ENCRYPTION_KEY is not set: webhook signing secrets are stored "
                "unencrypted in Redis"
            )
    _export(settings)
    metrics_dir = _metrics_dir(settings.workers)
    base = f"http://{settings.host}:{settings.port}"
    store_desc = f"embedded store in {settings.data_dir}" if embedded else settings.redis_url
    print(f"runcycles-server-lite serving {base} ({store_desc})")
    print(f"  runtime API:  {base}/v1/...   (X-Cycles-API-Key)")
    print(f"  admin API:    {base}/v1/admin/...   (X-Admin-API-Key)")
    print(f"  health:       {base}/actuator/health")
    admin_server: AdminListener | None = None
    supervisor = None
    if embedded is not None:
        from ._supervise import StoreSupervisor

        supervisor = StoreSupervisor(embedded).start()
    try:
        if settings.admin_port is not None:
            admin_server = AdminListener(settings).start()
            print(f"  admin API:    http://{settings.host}:{settings.admin_port}/v1/admin/...")
        sys.stdout.flush()
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it with the previous
        # handler; make that handler an exception so the cleanup below runs (the embedded
        # store is stopped, flushing its AOF) instead of the process dying on the spot.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        uvicorn.run(
            "runcycles_server_lite.cli:app_factory",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            log_config=None,  # keep our structured handler
            access_log=False,
            server_header=False,
            # Forwarded headers are only honoured behind a proxy the operator names.
            proxy_headers=settings.proxy_headers,
            # uvicorn kills and replaces a worker that misses a 5 s ping; on a loaded machine a
            # busy worker misses it, and a replacement spawned as SIGTERM arrives was left
            # running, so the server never exited. A hung worker is still replaced, later.
            timeout_worker_healthcheck=30,
            **uvicorn_options(settings),
        )
    except KeyboardInterrupt:
        pass
    finally:
        if admin_server is not None:
            admin_server.stop()
        if supervisor is not None:
            supervisor.stop()  # before the store is stopped on purpose
        if embedded is not None:
            embedded.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _metrics_dir(workers: int) -> str | None:
    """With several workers, point prometheus-client's multiprocess mode at a fresh folder
    (each worker writes its counters there; a scrape of any worker sums them). Returns the
    folder to remove at exit, or None (one process, or a folder the operator chose)."""
    if workers <= 1:
        return None
    chosen = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = chosen or tempfile.mkdtemp(prefix="runcycles-metrics-")
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):  # a previous run's counts would add to this run's
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return None if chosen else path


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class AdminListener:
    """The admin plane alone on ``--admin-port``: a second uvicorn server in this process,
    on its own thread and event loop, so it works the same with one worker or several."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from .app import create_app

        assert settings.admin_port is not None
        config = uvicorn.Config(
            create_app(settings, admin_only=True),
            host=settings.host,
            port=settings.admin_port,
            log_level=settings.log_level,
            log_config=None,
            access_log=False,
            server_header=False,
            **uvicorn_options(settings),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, name="runcycles-admin-listener", daemon=True
        )

    def start(self, timeout: float = 20.0) -> AdminListener:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit(f"could not start the admin listener on port {self.port}")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int | None:
        return self.server.config.port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command in (None, "serve"):
        return serve(settings_from_args(ns))
    from .admin_client import run_command

    return run_command(ns)


if __name__ == "__main__":
    raise SystemExit(main())
