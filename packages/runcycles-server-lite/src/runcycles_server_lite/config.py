"""Server settings, from CLI flags and environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

DEFAULT_PORT = 7878
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
# Files the embedded mode keeps (0600) in its data dir, read by the server and the admin CLI.
ADMIN_KEY_FILE = "admin-api-key"
WEBHOOK_KEY_FILE = "webhook-secret-key"
# Largest request body accepted, in bytes (larger ones get a 413 while still streaming in).
DEFAULT_MAX_BODY_BYTES = 1 << 20


def default_data_dir() -> Path:
    """Where the embedded store keeps its AOF, socket and generated admin key."""
    return Path(platformdirs.user_data_dir("runcycles-server-lite", appauthor=False))


@dataclass(slots=True)
class Settings:
    """Everything the app needs to start. ``redis_url`` is set once the store is known."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    admin_port: int | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    redis_url: str | None = None
    key_prefix: str = "rc"
    admin_api_key: str | None = None
    # Seals webhook signing secrets at rest (base64 of 32 bytes; webhooks/sealing.py). The
    # embedded store keeps one in its data dir when this is unset.
    webhook_secret_key: str | None = None
    # When set, GET /metrics needs "Authorization: Bearer <token>" (Prometheus'
    # authorization.credentials); unset, it is open like the health endpoints.
    metrics_token: str | None = None
    workers: int = 1
    log_level: str = "info"
    # "json" or "text"; None = text on a terminal, JSON otherwise.
    log_format: str | None = None
    proxy_headers: bool = False
    # Expiry sweeper cadence and batch; several processes coordinate through a Redis lease.
    sweep_interval_s: float = 1.0
    sweep_batch: int = 200
    # How long a resolved API key stays cached in-process (revocation lag upper bound).
    auth_cache_ttl_s: float = 2.0
    # How long a finalized (committed, released, expired) reservation stays readable
    # (GET /v1/reservations/{id}, list) after it was finalized.
    finalized_retention_ms: int = 30 * 24 * 3600 * 1000
    # How long the idempotency records of a reservation's reserve, commit, release and extend
    # stay after it was finalized (replays need the reservation too, so the lifetime used is
    # at most finalized_retention_ms). While a reservation is ACTIVE its records always stay.
    idempotency_retention_ms: int = 30 * 24 * 3600 * 1000
    # Webhook dispatcher cadence (0 disables it) and per-attempt HTTP timeout.
    webhook_interval_s: float = 0.5
    webhook_timeout_s: float = 10.0
    # Governance events (the event stream) are kept this long (spec: 90 days hot).
    event_retention_ms: int = 90 * 24 * 3600 * 1000
    # Largest request body, in bytes: over it, a 413 and the rest of the body is never read.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Listener hardening (see _serving.py): idle keep-alive connections are closed after
    # this many seconds; past max_connections open connections uvicorn answers a bare 503
    # (0: no cap); past max_inflight requests being handled per process the app answers the
    # protocol's 503, health endpoints exempt (0: no cap).
    keep_alive_timeout_s: int = 5
    # A connection must send a request's complete headers within this many seconds of
    # connecting (or of a further request's first byte), else it is closed (0: no deadline).
    header_timeout_s: float = 10.0
    max_connections: int = 1024
    max_inflight: int = 512
    # The embedded store's AOF fsync policy: "everysec" (lose at most ~1 s on a power cut) or
    # "always" (fsync every write, slower).
    fsync: str = "everysec"
    # Serve on an external Redis with AOF off (a restart loses the ledger); refused otherwise.
    allow_volatile_store: bool = False
    # Liveness fails once the store has been unreachable this long, so that an orchestrator
    # restarts the server (readiness fails at once; a short outage is not a reason to restart).
    liveness_store_grace_s: float = 30.0

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from ``RUNCYCLES_*`` / ``REDIS_URL`` / ``ADMIN_API_KEY`` variables."""
        s = cls()
        env = os.environ
        if env.get("RUNCYCLES_METRICS_TOKEN"):
            s.metrics_token = env["RUNCYCLES_METRICS_TOKEN"]
        if env.get("WEBHOOK_SECRET_ENCRYPTION_KEY"):
            s.webhook_secret_key = env["WEBHOOK_SECRET_ENCRYPTION_KEY"]
        if "RUNCYCLES_HOST" in env:
            s.host = env["RUNCYCLES_HOST"]
        if "RUNCYCLES_PORT" in env:
            s.port = int(env["RUNCYCLES_PORT"])
        if "RUNCYCLES_DATA_DIR" in env:
            s.data_dir = Path(env["RUNCYCLES_DATA_DIR"])
        s.redis_url = env.get("REDIS_URL") or None
        s.key_prefix = env.get("RUNCYCLES_KEY_PREFIX", s.key_prefix)
        s.admin_api_key = env.get("ADMIN_API_KEY") or None
        s.log_level = env.get("RUNCYCLES_LOG_LEVEL", s.log_level)
        s.log_format = env.get("RUNCYCLES_LOG_FORMAT") or s.log_format
        if "RUNCYCLES_SWEEP_INTERVAL_S" in env:
            s.sweep_interval_s = float(env["RUNCYCLES_SWEEP_INTERVAL_S"])
        if "RUNCYCLES_EVENT_RETENTION_DAYS" in env:
            s.event_retention_ms = _days_ms(env["RUNCYCLES_EVENT_RETENTION_DAYS"])
        if "RUNCYCLES_FINALIZED_RETENTION_DAYS" in env:
            s.finalized_retention_ms = _days_ms(env["RUNCYCLES_FINALIZED_RETENTION_DAYS"])
        if "RUNCYCLES_IDEMPOTENCY_RETENTION_DAYS" in env:
            s.idempotency_retention_ms = _days_ms(env["RUNCYCLES_IDEMPOTENCY_RETENTION_DAYS"])
        if "RUNCYCLES_AUTH_CACHE_TTL_S" in env:
            s.auth_cache_ttl_s = float(env["RUNCYCLES_AUTH_CACHE_TTL_S"])
        if "RUNCYCLES_MAX_BODY_BYTES" in env:
            s.max_body_bytes = int(env["RUNCYCLES_MAX_BODY_BYTES"])
        if "RUNCYCLES_KEEP_ALIVE_TIMEOUT_S" in env:
            s.keep_alive_timeout_s = int(env["RUNCYCLES_KEEP_ALIVE_TIMEOUT_S"])
        if "RUNCYCLES_HEADER_TIMEOUT_S" in env:
            s.header_timeout_s = float(env["RUNCYCLES_HEADER_TIMEOUT_S"])
        if "RUNCYCLES_MAX_CONNECTIONS" in env:
            s.max_connections = int(env["RUNCYCLES_MAX_CONNECTIONS"])
        if "RUNCYCLES_MAX_INFLIGHT" in env:
            s.max_inflight = int(env["RUNCYCLES_MAX_INFLIGHT"])
        if "RUNCYCLES_FSYNC" in env:
            s.fsync = env["RUNCYCLES_FSYNC"]
        if "RUNCYCLES_LIVENESS_STORE_GRACE_S" in env:
            s.liveness_store_grace_s = float(env["RUNCYCLES_LIVENESS_STORE_GRACE_S"])
        flag = env.get("RUNCYCLES_ALLOW_VOLATILE_STORE", "").strip().lower()
        s.allow_volatile_store = flag in ("1", "true", "yes", "on")
        return s

    @property
    def idempotency_ms(self) -> int:
        """The idempotency lifetime after finalization actually used (see above)."""
        return min(self.idempotency_retention_ms, self.finalized_retention_ms)


def _days_ms(days: str) -> int:
    """Days (fractions allowed, e.g. 0.5) as whole milliseconds, at least 1."""
    ms = round(float(days) * 86_400_000)
    if ms < 1:
        raise ValueError(f"a retention must be positive, got {days} days")
    return ms


def days_ms(days: float) -> int:
    """``_days_ms`` for CLI values."""
    return _days_ms(str(days))
