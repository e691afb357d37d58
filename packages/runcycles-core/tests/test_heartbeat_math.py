from __future__ import annotations

import pytest

from runcycles_core._heartbeat import LeaseClock


def test_worked_example_from_the_spec() -> None:
    # lead 60 s, timeout 10 s, rtt 1.5 s → about 37 s.
    clock = LeaseClock(timeout_ms=10_000)
    delay = clock.on_success(remaining_ttl_ms=61_500, sent_at_ms=0, received_at_ms=1_500)
    # lead_floor 60 s; budget 10 s; safety max(1 s, 3 s) = 3 s; reserve 2 * 10 + 3 = 23 s.
    assert delay == pytest.approx(37_000)


def test_short_lease_extends_immediately() -> None:
    clock = LeaseClock(timeout_ms=5_000)
    assert clock.on_success(remaining_ttl_ms=3_000, sent_at_ms=0, received_at_ms=10) == 0
    assert not clock.should_stop_for_zero_delays
    assert clock.on_success(remaining_ttl_ms=3_000, sent_at_ms=20, received_at_ms=30) == 0
    assert clock.should_stop_for_zero_delays


def test_missing_remaining_ttl_means_no_lead() -> None:
    clock = LeaseClock(timeout_ms=1_000)
    assert clock.on_success(remaining_ttl_ms=None, sent_at_ms=0, received_at_ms=5) == 0


def test_unknown_timeout_extends_at_once_and_never_retries() -> None:
    clock = LeaseClock(timeout_ms=None)
    assert clock.on_success(remaining_ttl_ms=60_000, sent_at_ms=0, received_at_ms=1) == 0
    assert clock.on_transient_failure(now_ms=10) is None


def test_transient_failure_retries_within_window_then_stops() -> None:
    clock = LeaseClock(timeout_ms=2_000)
    clock.on_success(remaining_ttl_ms=60_000, sent_at_ms=0, received_at_ms=0)
    # lead 60 s; budget 2 s; safety 1 s → window 57 s; delay min(30 s, 15 s, 57 s).
    assert clock.on_transient_failure(now_ms=0) == pytest.approx(15_000)
    # 58 s later: lead 2 s, window -1 s → stop.
    assert clock.on_transient_failure(now_ms=58_000) is None


def test_retry_after_used_only_if_it_fits() -> None:
    clock = LeaseClock(timeout_ms=2_000)
    clock.on_success(remaining_ttl_ms=20_000, sent_at_ms=0, received_at_ms=0)
    assert clock.on_transient_failure(now_ms=1, retry_after_ms=5_000) == 5_000
    assert clock.on_transient_failure(now_ms=2, retry_after_ms=50_000) is None


def test_no_spin_when_nothing_changes() -> None:
    clock = LeaseClock(timeout_ms=1_000)
    clock.on_success(remaining_ttl_ms=10_000, sent_at_ms=0, received_at_ms=0)
    assert clock.on_transient_failure(now_ms=100) is not None
    assert clock.on_transient_failure(now_ms=100) is None
