"""Retry waits: jittered, yet never near zero (a 503 storm is not retried at once)."""

from __future__ import annotations

from bananastand.providers.upstream_retry import backoff_delay


def test_backoff_is_jittered_within_the_upper_half_of_a_doubling_window() -> None:
    for attempt, window in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)):
        delays = [backoff_delay(attempt, 1.0) for _ in range(500)]
        assert all(window / 2 <= delay <= window for delay in delays), attempt
        assert max(delays) - min(delays) > window / 4  # spread out, not one value
    # Three retries after a first failure wait at least 0.5 + 1 + 2 seconds in all.
    assert sum(backoff_delay(attempt, 1.0) for attempt in (1, 2, 3)) >= 3.5
