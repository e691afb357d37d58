"""Retry bookkeeping for one logical call: backoff with jitter and ``Retry-After`` floors.

The sync and async clients run the same loop; only sending and sleeping differ, so the
decisions live here.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .config import RetryPolicy
from .errors import CyclesUnavailableError

_DELTA_SECONDS = re.compile(r"^\s*(\d{1,9})\s*$")


def parse_retry_after_ms(value: str | None) -> int | None:
    """``Retry-After`` in milliseconds. The protocol allows delta-seconds only; the HTTP-date
    form and anything malformed count as absent."""
    if value is None:
        return None
    m = _DELTA_SECONDS.match(value)
    return int(m.group(1)) * 1000 if m else None


@dataclass
class Ambiguous:
    """A failed attempt whose outcome is unknown (the request may or may not have applied)."""

    kind: type[CyclesUnavailableError]
    message: str
    status: int = 0
    error_code: str | None = None
    retry_after_ms: int | None = None
    request_id: str | None = None
    trace_id: str | None = None
    details: dict[str, Any] | None = None
    cause: BaseException | None = None
    # No connection could be made (refused, unknown host): retried within the connect budget.
    unreachable: bool = False

    def to_error(self, attempts: int, message: str | None = None) -> CyclesUnavailableError:
        err = self.kind(
            self.message if message is None else message,
            status=self.status,
            error_code=self.error_code,
            retry_after_ms=self.retry_after_ms,
            request_id=self.request_id,
            trace_id=self.trace_id,
            details=self.details,
            attempts=attempts,
        )
        err.__cause__ = self.cause
        return err


# One generator for every call's jitter: seeding a fresh Random per call reads os.urandom each
# time, and jitter needs no independence between calls.
_JITTER = random.Random()


@dataclass
class RetryBudget:
    """Counts attempts of one call and decides the wait before the next one."""

    policy: RetryPolicy
    rng: random.Random = field(default_factory=lambda: _JITTER)
    attempts: int = 0
    waited: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def spent(self) -> float:
        """Seconds this call has taken so far (at least the waits it scheduled)."""
        return max(time.monotonic() - self.started, self.waited)

    def next_delay(self, failure: Ambiguous) -> float | None:
        """Seconds to wait before re-sending, or ``None`` to give up."""
        delay = self._delay(failure)
        if delay is None:
            return None
        if failure.unreachable and self.spent + delay > self.policy.connect_budget:
            return None
        self.waited += delay
        return delay

    def _delay(self, failure: Ambiguous) -> float | None:
        if not self.policy.enabled or self.attempts > self.policy.max_retries:
            return None
        backoff = self.policy.backoff(self.attempts)
        delay = backoff * (1.0 - self.policy.jitter * self.rng.random())
        if failure.retry_after_ms is not None:
            floor = failure.retry_after_ms / 1000.0
            if floor > self.policy.max_delay:
                return None
            delay = max(delay, floor)
        return delay
