"""Heartbeat (extend) scheduling: the protocol's lead-based client algorithm, as pure math.

All values are milliseconds. The runtime spec's algorithm (digest §5.4):

- after every valid create/extend response: ``lead_floor = max(0, remaining_ttl_ms - rtt)``,
  ``attempt_budget = max(timeout, 1000, 2 * max_rtt)``, ``safety = max(1000, 2 * max_rtt)``,
  ``next_delay = max(0, lead_floor - (2 * attempt_budget + safety))`` measured from receipt;
- after a transient failure: ``lead_now = max(0, lead_floor - elapsed)``,
  ``window = lead_now - attempt_budget - safety``; stop if negative, else retry with the same key
  after ``min(30 s, lead_now / 4, window)`` (a 429's Retry-After only if it fits the window).

Kept free of I/O and clocks so that the sync and async lifecycles share it and tests can drive
it with exact numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MIN_BUDGET_MS = 1000
MIN_SAFETY_MS = 1000
MAX_RETRY_DELAY_MS = 30_000

# Error codes after which extending can never succeed again.
TERMINAL_CODES = frozenset(
    {
        "RESERVATION_EXPIRED",
        "RESERVATION_FINALIZED",
        "MAX_EXTENSIONS_EXCEEDED",
        "TENANT_CLOSED",
        "NOT_FOUND",
    }
)


@dataclass
class LeaseClock:
    """What the heartbeat knows about the lease, updated from each valid server response.

    ``timeout_ms`` is the request timeout (``None`` = unknown, which makes the attempt budget
    infinite, so the scheduler extends immediately rather than risk a lapse).
    """

    timeout_ms: float | None
    max_rtt_ms: float = 0.0
    lead_floor_ms: float = 0.0
    received_at_ms: float = 0.0
    zero_delay_streak: int = 0
    _last_failure: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def attempt_budget_ms(self) -> float:
        if self.timeout_ms is None:
            return math.inf
        return max(self.timeout_ms, MIN_BUDGET_MS, 2 * self.max_rtt_ms)

    @property
    def safety_margin_ms(self) -> float:
        return max(MIN_SAFETY_MS, 2 * self.max_rtt_ms)

    def on_success(
        self, *, remaining_ttl_ms: float | None, sent_at_ms: float, received_at_ms: float
    ) -> float:
        """Record a valid response; return the delay until the next extend (from receipt)."""
        rtt = max(0.0, received_at_ms - sent_at_ms)
        self.max_rtt_ms = max(self.max_rtt_ms, rtt)
        self.lead_floor_ms = 0.0 if remaining_ttl_ms is None else max(0.0, remaining_ttl_ms - rtt)
        self.received_at_ms = received_at_ms
        self._last_failure = None
        reserve = 2 * self.attempt_budget_ms + self.safety_margin_ms
        delay = max(0.0, self.lead_floor_ms - reserve) if math.isfinite(reserve) else 0.0
        self.zero_delay_streak = self.zero_delay_streak + 1 if delay == 0 else 0
        return delay

    @property
    def should_stop_for_zero_delays(self) -> bool:
        """Two consecutive successes with no room left: extending cannot keep up."""
        return self.zero_delay_streak >= 2

    def lead_now_ms(self, now_ms: float) -> float:
        return max(0.0, self.lead_floor_ms - max(0.0, now_ms - self.received_at_ms))

    def on_transient_failure(
        self, now_ms: float, retry_after_ms: float | None = None
    ) -> float | None:
        """Delay before a same-key retry after a transient failure, or ``None`` to stop."""
        lead = self.lead_now_ms(now_ms)
        budget = self.attempt_budget_ms
        if not math.isfinite(budget):
            return None
        window = lead - budget - self.safety_margin_ms
        if window < 0:
            return None
        state = (now_ms, window)
        if self._last_failure is not None:
            last_now, last_window = self._last_failure
            # Stop if neither time nor the window moved: we would spin.
            if last_now == now_ms and last_window == window:
                return None
            if window == 0 and last_window == 0:
                return None
        self._last_failure = state
        if retry_after_ms is not None:
            return retry_after_ms if retry_after_ms <= window else None
        return max(0.0, min(MAX_RETRY_DELAY_MS, lead / 4, window))
