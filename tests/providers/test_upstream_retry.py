"""`upstream_retry`: the one retry policy of the upstream backends."""

from __future__ import annotations

import time

import pytest

from bananastand.providers.base import ProviderError
from bananastand.providers.upstream_retry import (
    GaveUp,
    RetryableFailure,
    RetryPolicy,
    call_with_retries,
)

FAST = RetryPolicy(max_attempts=3, backoff_seconds=0.001)


class Script:
    """An attempt failing (retryably) `failures` times, then answering "ok"."""

    def __init__(self, failures: int, retry_after: float | None = None) -> None:
        self.failures = failures
        self.retry_after = retry_after
        self.calls = 0
        self.reports: list[tuple[float | None, str]] = []

    async def attempt(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise RetryableFailure("503", "Upstream is overloaded (503)", self.retry_after)
        return "ok"

    async def report(self, fraction: float | None, message: str) -> None:
        self.reports.append((fraction, message))


async def run(script: Script, policy: RetryPolicy = FAST, deadline: float | None = None) -> str:
    return await call_with_retries(
        script.attempt, policy=policy, deadline=deadline, upstream="Upstream", report=script.report
    )


async def test_retries_until_it_succeeds_saying_so_each_time() -> None:
    script = Script(failures=2)
    assert await run(script) == "ok"
    assert script.calls == 3
    assert script.reports == [
        (None, "Upstream busy (503), retrying in 0.0 s (try 2 of 3)"),
        (None, "Upstream busy (503), retrying in 0.0 s (try 3 of 3)"),
    ]


async def test_gives_up_after_the_last_try() -> None:
    script = Script(failures=5)
    with pytest.raises(GaveUp) as caught:
        await run(script)
    assert isinstance(caught.value, ProviderError)
    assert str(caught.value) == "Upstream is overloaded (503); gave up after 3 tries"
    assert (caught.value.attempts, caught.value.wait) == (3, None)
    assert script.calls == 3


async def test_at_least_one_try_even_when_configured_with_none() -> None:
    script = Script(failures=5)
    with pytest.raises(GaveUp, match=r"; gave up after 1 try$"):
        await run(script, RetryPolicy(max_attempts=0, backoff_seconds=0.001))
    assert script.calls == 1


async def test_a_wait_past_the_deadline_is_not_started() -> None:
    script = Script(failures=1, retry_after=50.0)
    started = time.monotonic()
    with pytest.raises(GaveUp) as caught:
        await run(script, deadline=time.monotonic() + 10)
    assert time.monotonic() - started < 1
    assert str(caught.value) == (
        "Upstream is overloaded (503); gave up after 1 try (no time left to retry)"
    )
    assert caught.value.wait is not None and caught.value.wait >= 50.0
    assert script.calls == 1
    assert script.reports == []


async def test_without_a_deadline_a_wait_is_bounded() -> None:
    script = Script(failures=1, retry_after=1000.0)
    policy = RetryPolicy(max_attempts=2, backoff_seconds=0.001, max_wait_without_deadline=0.01)
    assert await run(script, policy) == "ok"
    assert script.reports == [(None, "Upstream busy (503), retrying in 0.0 s (try 2 of 2)")]


async def test_other_failures_are_not_retried() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise ValueError("not retryable")

    async def report(fraction: float | None, message: str) -> None:
        raise AssertionError("nothing to report")

    with pytest.raises(ValueError, match="not retryable"):
        await call_with_retries(attempt, policy=FAST, deadline=None, upstream="U", report=report)
    assert calls == 1


def test_a_wait_is_the_backoff_or_what_upstream_asked_if_longer() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_seconds=1.0)
    for _ in range(100):
        assert 0.5 <= policy.wait_before(1, None) <= 1.0
        assert 1.0 <= policy.wait_before(2, 0.1) <= 2.0
        assert policy.wait_before(1, 7.5) == 7.5
