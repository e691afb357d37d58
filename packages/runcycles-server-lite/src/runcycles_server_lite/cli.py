"""The ``runcycles-server-lite`` console script. Serving is the default action."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from starlette.applications import Starlette

from .config import DEFAULT_PORT, Settings, default_data_dir
from .embedded import EmbeddedRedis

log = logging.getLogger("runcycles_server_lite.cli")

ADMIN_KEY_FILE = "admin-api-key"


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runcycles-server-lite",
        description="Cycles Protocol v0 budget authority (runtime + admin plane).",
    )
    _serve_parser(parser)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the API (the default)")
    _serve_parser(serve)
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
    return s


def ensure_admin_key(settings: Settings) -> tuple[str, bool]:
    """The embedded-mode admin key: ADMIN_API_KEY if set, else one generated on first start
    and kept (0600) in the data dir. Returns (key, newly_created)."""
    if settings.admin_api_key:
        return settings.admin_api_key, False
    path = settings.data_dir / ADMIN_KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = "cyc_admin_" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    return key, True


def _export(settings: Settings) -> None:
    # Worker processes rebuild Settings from the environment (see app_factory).
    os.environ["REDIS_URL"] = settings.redis_url or ""
    os.environ["RUNCYCLES_KEY_PREFIX"] = settings.key_prefix
    if settings.admin_api_key:
        os.environ["ADMIN_API_KEY"] = settings.admin_api_key
    os.environ["RUNCYCLES_DATA_DIR"] = str(settings.data_dir)


def app_factory() -> Starlette:
    """uvicorn factory for worker processes: settings come from the environment."""
    from .app import create_app

    return create_app(Settings.from_env())


def serve(settings: Settings) -> int:
    import uvicorn

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir or default_data_dir()).start()
        settings.redis_url = embedded.url
        key, created = ensure_admin_key(settings)
        settings.admin_api_key = key
        if created:
            where = settings.data_dir / ADMIN_KEY_FILE
            print(f"Generated admin API key (shown once; kept in {where}):")
            print(f"  X-Admin-API-Key: {key}")
    elif not settings.admin_api_key:
        log.warning("ADMIN_API_KEY is not set: the admin plane will refuse every request")
    _export(settings)
    base = f"http://{settings.host}:{settings.port}"
    store_desc = f"embedded store in {settings.data_dir}" if embedded else settings.redis_url
    print(f"runcycles-server-lite serving {base} ({store_desc})")
    print(f"  runtime API:  {base}/v1/...   (X-Cycles-API-Key)")
    print(f"  admin API:    {base}/v1/admin/...   (X-Admin-API-Key)")
    print(f"  health:       {base}/actuator/health")
    sys.stdout.flush()
    try:
        uvicorn.run(
            "runcycles_server_lite.cli:app_factory",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=False,
            server_header=False,
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command not in (None, "serve"):
        parser.error(f"unknown command {ns.command}")
    return serve(settings_from_args(ns))


if __name__ == "__main__":
    raise SystemExit(main())
