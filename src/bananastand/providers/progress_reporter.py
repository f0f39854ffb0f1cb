"""Progress as a generation's watcher sees it: it never goes backwards.

Upstream backends report from several places at once (parallel calls, a waiting
ticker, retries); `ProgressReporter` folds them into one sequence of reports.
"""

from __future__ import annotations

import asyncio

from PIL import Image

from bananastand.providers.base import Progress


class ProgressReporter:
    """Forwards progress reports to a `Progress`, keeping the fraction from going down.

    Invariants: every fraction passed on is in 0..1 and at least the one before it;
    reports are passed on one at a time, in the order they were made. A report
    without a fraction (`None`) repeats the current one with a new message; a
    preview, when given, is passed on with its report.
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._lock = asyncio.Lock()
        self.fraction = 0.0

    async def __call__(
        self, fraction: float | None, message: str, *, preview: Image.Image | None = None
    ) -> None:
        async with self._lock:
            if fraction is not None:
                self.fraction = max(self.fraction, min(fraction, 1.0))
            if preview is None:
                await self._progress(self.fraction, message)
            else:
                await self._progress(self.fraction, message, preview=preview)
