"""While an upstream works and says nothing: "Waiting for Gemini… 12 s", every second.

The fraction shown creeps from `floor` toward `ceiling` and never reaches it, so
it never overtakes the progress still to come when the answer arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from bananastand.providers.progress_reporter import ProgressReporter

log = logging.getLogger(__name__)


def creep(elapsed: float, *, floor: float, ceiling: float, half_life: float) -> float:
    """`floor` at 0 s, half way to `ceiling` after `half_life` seconds, and so on:
    always in floor..ceiling, never decreasing with `elapsed`, never `ceiling` itself
    (for any finite time a float can tell apart from it)."""
    remaining: float = 0.5 ** (max(0.0, elapsed) / half_life)  # of the gap, 1 -> 0
    return min(floor + (ceiling - floor) * (1 - remaining), ceiling)


def _never() -> bool:
    return False


def _nothing() -> str:
    return ""


@dataclass
class WaitingTicker:
    """Every `interval` seconds, once waiting has begun (`since()` is a
    `time.monotonic()` time, not None) and until `finished()`, reports
    "Waiting for {upstream}… N s" plus `detail()`, at the creeping fraction."""

    report: ProgressReporter
    upstream: str  # as clients read it: "Gemini", "OpenAI"
    since: Callable[[], float | None]
    interval: float = 1.0
    floor: float = 0.1
    ceiling: float = 0.8
    half_life: float = 20.0
    finished: Callable[[], bool] = _never
    detail: Callable[[], str] = _nothing  # appended to the message, e.g. " (1 of 2 …)"

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            started = self.since()
            if started is None:
                continue
            if self.finished():
                return
            elapsed = time.monotonic() - started
            fraction = creep(
                elapsed, floor=self.floor, ceiling=self.ceiling, half_life=self.half_life
            )
            await self.report(
                fraction, f"Waiting for {self.upstream}… {elapsed:.0f} s{self.detail()}"
            )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Tick in the background for the duration of the block. The ticker is
        stopped (and waited for) on the way out; a failure of its own is logged,
        never raised into the generation."""
        task = asyncio.create_task(self.run(), name=f"{self.upstream.lower()}-waiting-ticker")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s waiting ticker failed: %r", self.upstream, task.exception())
