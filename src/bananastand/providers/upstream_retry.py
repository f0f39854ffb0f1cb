"""Retrying an upstream call: jittered exponential backoff, under a deadline.

One policy for every upstream backend. An attempt raises `RetryableFailure` for
a failure worth another try (rate limits, server errors, transport errors) and
anything else for one that is not; `call_with_retries` then waits and tries
again, or gives up with `GaveUp` (a `ProviderError`, safe to show clients).

Invariants: at most `max_attempts` tries; every wait is at least the jittered
backoff and at least what upstream asked for (`retry_after`); a wait that would
end at or past the deadline is not started (it gives up at once instead);
without a deadline no single wait exceeds `max_wait_without_deadline`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bananastand.providers.base import ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delay(attempt: int, base_seconds: float) -> float:
    """Wait before retry number `attempt` (1, 2, …): jittered over the upper half of
    an exponential window (`base_seconds`, doubling), so parallel callers spread
    out yet every wait is real: "gave up after N tries" means upstream had time."""
    window = base_seconds * 2 ** (attempt - 1)
    return random.uniform(window / 2, window)


class RetryableFailure(Exception):
    """Raised by an attempt when the failure is worth another try."""

    def __init__(self, label: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.label = label  # a few words for "busy (…)": "429", "timeout", "ConnectError"
        self.message = message  # safe to show clients: "OpenAI rate limit (429)"
        self.retry_after = retry_after  # seconds upstream asked us to wait, if it did


class GaveUp(ProviderError):
    """Retries ended without success. Its message (safe to show clients) is the
    last failure's, with how many tries were made and, when it stopped for the
    deadline, that there was no time left."""

    def __init__(self, failure: RetryableFailure, attempts: int, *, wait: float | None) -> None:
        self.failure = failure
        self.attempts = attempts
        self.wait = wait  # the wait that would have passed the deadline; None: out of tries
        text = f"{failure.message}; gave up after {self.tries}"
        super().__init__(text if wait is None else f"{text} (no time left to retry)")

    @property
    def tries(self) -> str:
        return f"{self.attempts} {'try' if self.attempts == 1 else 'tries'}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: from the settings `upstream_max_attempts` and
    `upstream_backoff_seconds`."""

    max_attempts: int
    backoff_seconds: float
    max_wait_without_deadline: float = 120.0

    @property
    def attempts(self) -> int:
        return max(1, self.max_attempts)

    def wait_before(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before try `retry + 1`: the jittered backoff, or what
        upstream asked if that is longer."""
        return max(backoff_delay(retry, self.backoff_seconds), retry_after or 0.0)


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline: float | None,
    upstream: str,
    report: Callable[[float | None, str], Awaitable[None]],
) -> T:
    """`attempt()`'s result, retrying it while it raises `RetryableFailure` (see the
    module docstring). Each retry is announced through `report(None, message)`,
    e.g. "Gemini busy (503), retrying in 1.2 s (try 2 of 3)". Raises `GaveUp`, or
    whatever else `attempt` raises."""
    tried = 0
    while True:
        tried += 1
        try:
            return await attempt()
        except RetryableFailure as exc:
            failure = exc
        if tried >= policy.attempts:
            gave_up = GaveUp(failure, tried, wait=None)
            log.warning("%s call failed: %s", upstream, gave_up)
            raise gave_up from failure
        wait = policy.wait_before(tried, failure.retry_after)
        if deadline is not None:
            if time.monotonic() + wait >= deadline:
                gave_up = GaveUp(failure, tried, wait=wait)
                log.warning("%s call failed: %s", upstream, gave_up)
                raise gave_up from failure
        else:
            wait = min(wait, policy.max_wait_without_deadline)
        log.info(
            "%s call: %s, retrying in %.2f s (try %d of %d)",
            upstream,
            failure.message,
            wait,
            tried + 1,
            policy.attempts,
        )
        await report(
            None,
            f"{upstream} busy ({failure.label}), retrying in {wait:.1f} s "
            f"(try {tried + 1} of {policy.attempts})",
        )
        await asyncio.sleep(wait)
