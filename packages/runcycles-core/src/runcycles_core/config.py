"""Client configuration: where the server is, who we are, how long to wait, how to retry.

Field names and ``CYCLES_*`` environment variables follow the official ``runcycles`` SDK, so a
deployment configured for it works unchanged; the extra settings this client adds have their own
``CYCLES_*`` variables (listed on :meth:`CyclesConfig.from_env`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ._fields import strict_fields
from .models import Subject

__all__ = ["CyclesConfig", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How one client call retries an ambiguous outcome (transport error, timeout, 5xx, 429).

    The same request, with the same idempotency key, is re-sent up to ``max_retries`` times.
    A refused connection (nothing listening, unknown host) is retried only while the call's
    time so far plus the next wait stays within ``connect_budget`` seconds, so a server that is
    down fails fast instead of backing off for the full schedule.
    Wait before retry *n* (1-based): ``min(initial_delay * multiplier**(n-1), max_delay)``, minus
    a random share of up to ``jitter`` of it; a ``Retry-After`` from the server is a floor on
    the wait. A ``Retry-After`` longer than ``max_delay`` ends the retries at once (waiting less
    than the server asked would break the protocol; waiting longer is not what the caller
    configured).
    """

    enabled: bool = True
    max_retries: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.2
    connect_budget: float = 2.0

    def __post_init__(self) -> None:
        if self.connect_budget < 0:
            raise ValueError("retry_connect_budget must be >= 0 seconds")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("retry multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry jitter must be within [0, 1]")

    def backoff(self, retry_number: int) -> float:
        """Un-jittered wait before retry ``retry_number`` (1-based)."""
        return float(
            min(self.initial_delay * self.multiplier ** (retry_number - 1), self.max_delay)
        )


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use true/false)")


def _env_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _env_str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw if raw else None


@strict_fields
@dataclass
class CyclesConfig:
    """Settings for :class:`~runcycles_core.CyclesClient` / ``AsyncCyclesClient``.

    ``tenant`` … ``toolset`` are the default subject used when a call gives none.
    ``retry_*`` configure the per-call retry of ambiguous outcomes (see :class:`RetryPolicy`;
    ``retry_max_attempts`` is the number of retries after the first attempt;
    ``retry_connect_budget`` bounds, in seconds, how long a refused connection is retried).
    ``retry_flush_timeout``, ``journal_enabled``, ``journal_dir`` and ``journal_sync`` configure
    the durable settlement journal of the lifecycle layer (``journal_sync``: ``"overlap"``, the
    default, fsyncs a settlement's record while its commit request is in flight;
    ``"before_send"`` fsyncs it before the request leaves; see the README's journal section).

    An unknown keyword (a typo such as ``retry_max_atempts=``) raises :class:`TypeError`
    naming the closest valid field and listing them all.
    """

    base_url: str
    api_key: str

    tenant: str | None = None
    workspace: str | None = None
    app: str | None = None
    workflow: str | None = None
    agent: str | None = None
    toolset: str | None = None

    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    write_timeout: float = 5.0
    pool_timeout: float = 5.0

    retry_enabled: bool = True
    retry_max_attempts: int = 5
    retry_initial_delay: float = 0.5
    retry_multiplier: float = 2.0
    retry_max_delay: float = 30.0
    retry_jitter: float = 0.2
    retry_flush_timeout: float = 10.0
    retry_connect_budget: float = 2.0

    journal_enabled: bool = True
    journal_dir: str | None = None
    journal_sync: str = "overlap"

    # Lifecycle defaults for every guard on this client (a call's own setting wins).
    shadow: bool = False
    outage_policy: str = "fail_closed"

    user_agent: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("base_url is required")
        if not self.api_key:
            raise ValueError("api_key is required")
        self.base_url = self.base_url.rstrip("/")
        if self.outage_policy not in ("fail_closed", "fail_open"):
            raise ValueError("outage_policy must be 'fail_closed' or 'fail_open'")
        if self.journal_sync not in ("overlap", "before_send"):
            raise ValueError("journal_sync must be 'overlap' or 'before_send'")
        self.retry_policy  # noqa: B018 - validates the retry settings eagerly

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry settings as one value (validated)."""
        return RetryPolicy(
            enabled=self.retry_enabled,
            max_retries=self.retry_max_attempts,
            initial_delay=self.retry_initial_delay,
            multiplier=self.retry_multiplier,
            max_delay=self.retry_max_delay,
            jitter=self.retry_jitter,
            connect_budget=self.retry_connect_budget,
        )

    def default_subject(self, **overrides: str | None) -> Subject | None:
        """The configured subject with ``overrides`` applied; ``None`` if no level is set."""
        values = {level: getattr(self, level) for level in Subject.LEVELS}
        values.update({k: v for k, v in overrides.items() if v is not None})
        present = {k: v for k, v in values.items() if v}
        return Subject(**present) if present else None

    def __repr__(self) -> str:
        # Never print the API key (configs end up in logs and tracebacks).
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "api_key"
        )
        return f"CyclesConfig({shown}, api_key='***')"

    @classmethod
    def from_env(
        cls, prefix: str = "CYCLES_", *, environ: Mapping[str, str] | None = None
    ) -> CyclesConfig:
        """Build a config from environment variables (``environ`` defaults to ``os.environ``).

        Required: ``CYCLES_BASE_URL``, ``CYCLES_API_KEY`` (``ValueError`` if missing).
        Subject: ``CYCLES_TENANT``, ``_WORKSPACE``, ``_APP``, ``_WORKFLOW``, ``_AGENT``,
        ``_TOOLSET``. HTTP: ``CYCLES_CONNECT_TIMEOUT``, ``_READ_TIMEOUT``, ``_WRITE_TIMEOUT``,
        ``_POOL_TIMEOUT`` (seconds), ``CYCLES_USER_AGENT``. Retry: ``CYCLES_RETRY_ENABLED``,
        ``_RETRY_MAX_ATTEMPTS``, ``_RETRY_INITIAL_DELAY``, ``_RETRY_MULTIPLIER``,
        ``_RETRY_MAX_DELAY``, ``_RETRY_JITTER``, ``_RETRY_FLUSH_TIMEOUT``,
        ``_RETRY_CONNECT_BUDGET``. Journal:
        ``CYCLES_JOURNAL_ENABLED``, ``CYCLES_JOURNAL_DIR``, ``CYCLES_JOURNAL_SYNC``. Lifecycle
        defaults: ``CYCLES_SHADOW``,
        ``CYCLES_OUTAGE_POLICY`` (``fail_closed`` or ``fail_open``). Booleans accept
        true/false/1/0/yes/no/on/off; anything else is a ``ValueError``.
        """
        env = os.environ if environ is None else environ
        p = prefix
        base_url = env.get(f"{p}BASE_URL", "")
        api_key = env.get(f"{p}API_KEY", "")
        if not base_url:
            raise ValueError(f"{p}BASE_URL environment variable is required")
        if not api_key:
            raise ValueError(f"{p}API_KEY environment variable is required")
        return cls(
            base_url=base_url,
            api_key=api_key,
            tenant=_env_str(env, f"{p}TENANT"),
            workspace=_env_str(env, f"{p}WORKSPACE"),
            app=_env_str(env, f"{p}APP"),
            workflow=_env_str(env, f"{p}WORKFLOW"),
            agent=_env_str(env, f"{p}AGENT"),
            toolset=_env_str(env, f"{p}TOOLSET"),
            connect_timeout=_env_number(env, f"{p}CONNECT_TIMEOUT", 2.0),
            read_timeout=_env_number(env, f"{p}READ_TIMEOUT", 5.0),
            write_timeout=_env_number(env, f"{p}WRITE_TIMEOUT", 5.0),
            pool_timeout=_env_number(env, f"{p}POOL_TIMEOUT", 5.0),
            retry_enabled=_env_bool(env, f"{p}RETRY_ENABLED", True),
            retry_max_attempts=_env_int(env, f"{p}RETRY_MAX_ATTEMPTS", 5),
            retry_initial_delay=_env_number(env, f"{p}RETRY_INITIAL_DELAY", 0.5),
            retry_multiplier=_env_number(env, f"{p}RETRY_MULTIPLIER", 2.0),
            retry_max_delay=_env_number(env, f"{p}RETRY_MAX_DELAY", 30.0),
            retry_jitter=_env_number(env, f"{p}RETRY_JITTER", 0.2),
            retry_flush_timeout=_env_number(env, f"{p}RETRY_FLUSH_TIMEOUT", 10.0),
            retry_connect_budget=_env_number(env, f"{p}RETRY_CONNECT_BUDGET", 2.0),
            journal_enabled=_env_bool(env, f"{p}JOURNAL_ENABLED", True),
            journal_dir=_env_str(env, f"{p}JOURNAL_DIR"),
            journal_sync=_env_str(env, f"{p}JOURNAL_SYNC") or "overlap",
            shadow=_env_bool(env, f"{p}SHADOW", False),
            outage_policy=_env_str(env, f"{p}OUTAGE_POLICY") or "fail_closed",
            user_agent=_env_str(env, f"{p}USER_AGENT"),
        )
