"""`ProgressReporter` (never backwards) and `WaitingTicker` (creeping, never arriving)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from PIL import Image

from bananastand.providers.base import GeneratedImage
from bananastand.providers.progress_reporter import ProgressReporter
from bananastand.providers.waiting_ticker import WaitingTicker, creep


class Recorder:
    def __init__(self, pause: float = 0.0) -> None:
        self.seen: list[tuple[float, str, bool]] = []
        self.pause = pause
        self.inside = 0
        self.overlapped = False

    async def __call__(
        self,
        fraction: float,
        message: str,
        /,
        *,
        preview: Image.Image | None = None,
        image: GeneratedImage | None = None,
    ) -> None:
        self.inside += 1
        self.overlapped |= self.inside > 1
        await asyncio.sleep(self.pause)
        self.seen.append((fraction, message, preview is not None))
        self.inside -= 1


async def test_the_fraction_never_goes_down_nor_past_one() -> None:
    recorder = Recorder()
    report = ProgressReporter(recorder)
    preview = Image.new("RGB", (4, 4))
    await report(0.5, "half")
    await report(0.3, "less")
    await report(None, "same", preview=preview)
    await report(2.0, "too much")
    assert recorder.seen == [
        (0.5, "half", False),
        (0.5, "less", False),
        (0.5, "same", True),
        (1.0, "too much", False),
    ]
    assert report.fraction == 1.0


async def test_parallel_reports_are_passed_on_one_at_a_time() -> None:
    recorder = Recorder(pause=0.001)
    report = ProgressReporter(recorder)
    await asyncio.gather(*(report(i / 10, f"r{i}") for i in range(5)))
    assert not recorder.overlapped
    fractions = [fraction for fraction, _, _ in recorder.seen]
    assert fractions == sorted(fractions)


def test_creep_rises_from_the_floor_toward_the_ceiling_never_reaching_it() -> None:
    values = [creep(t, floor=0.1, ceiling=0.8, half_life=20) for t in range(0, 600, 5)]
    assert values[0] == pytest.approx(0.1)
    assert values == sorted(values)
    assert all(v < 0.8 for v in values)
    assert creep(20, floor=0.1, ceiling=0.8, half_life=20) == pytest.approx(0.45)
    assert creep(-5, floor=0.1, ceiling=0.8, half_life=20) == pytest.approx(0.1)


async def test_the_ticker_waits_for_its_start_and_stops_when_finished() -> None:
    recorder = Recorder()
    started: float | None = None
    done = False
    ticker = WaitingTicker(
        ProgressReporter(recorder),
        "Upstream",
        since=lambda: started,
        interval=0.005,
        finished=lambda: done,
        detail=lambda: " (0 of 1)",
    )
    async with ticker.running():
        await asyncio.sleep(0.03)
        assert recorder.seen == []  # not started: nothing said
        started = time.monotonic()
        await asyncio.sleep(0.03)
        ticks = len(recorder.seen)
        assert ticks >= 1
        done = True
        await asyncio.sleep(0.03)
        assert len(recorder.seen) <= ticks + 1
    assert all(message == "Waiting for Upstream… 0 s (0 of 1)" for _, message, _ in recorder.seen)
    assert all(0.1 <= fraction < 0.8 for fraction, _, _ in recorder.seen)


async def test_a_failing_ticker_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("watcher gone")

    ticker = WaitingTicker(
        ProgressReporter(broken), "Upstream", since=time.monotonic, interval=0.001
    )
    with caplog.at_level(logging.WARNING):
        async with ticker.running():
            await asyncio.sleep(0.02)
    assert "Upstream waiting ticker failed" in caplog.text
