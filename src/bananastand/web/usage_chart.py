"""Stacked bar charts of a usage series, drawn server-side as SVG (no script, no
library): one bar per day, one segment per model.

This module does the arithmetic; `templates/usage.html` draws it. The SVG is
stretched to its box (`preserveAspectRatio="none"`), so bars fill any width,
from a phone to a desktop; its text (the scale and the dates) is HTML beside it,
which stays legible at every width.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from bananastand.usage import Series

# Okabe and Ito's palette: told apart with the common colour-vision deficiencies.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#6b5b00", "#1d1d1f")
SLOT = 10  # viewBox units per day
HEIGHT = 100  # viewBox units for the tallest bar the scale allows
BAR = 7  # bar width within its slot

Metric = Literal["credits", "images"]


@dataclass(frozen=True, slots=True)
class Bar:
    """One model's part of one day's bar."""

    x: float
    y: float
    width: float
    height: float
    fill: str
    model: str
    day: date
    value: int


@dataclass(frozen=True, slots=True)
class Chart:
    metric: Metric
    bars: list[Bar]
    width: int  # of the viewBox
    height: int
    top: int  # the value at the top of the scale
    total: int
    first: date
    last: date

    @property
    def middle(self) -> int:
        """The value at the scale's middle line."""
        return self.top // 2


def colours(models: list[str]) -> dict[str, str]:
    return {model: PALETTE[n % len(PALETTE)] for n, model in enumerate(models)}


def nice_top(value: int) -> int:
    """The smallest of 2, 4, 6, 8, 10, 20, 40, … at or above `value`: round, and
    even, so the middle line is a whole number too."""
    top = 1
    while True:
        for step in (2, 4, 6, 8, 10):
            if top * step >= value:
                return top * step
        top *= 10


def stacked(series: Series, metric: Metric) -> Chart:
    """Each day's bar, segmented by model in the series' order (biggest first, at
    the bottom); days without use have no bar."""
    fills = colours(series.models)
    days = [series.day(day) for day in series.days]
    top = nice_top(max((sum(getattr(t, metric) for t in d.values()) for d in days), default=0))
    bars: list[Bar] = []
    for slot, (day, tallies) in enumerate(zip(series.days, days, strict=True)):
        base = 0.0
        for model in series.models:
            tally = tallies.get(model)
            value = getattr(tally, metric) if tally else 0
            if not value:
                continue
            height = value * HEIGHT / top
            bars.append(
                Bar(
                    x=slot * SLOT + (SLOT - BAR) / 2,
                    y=round(HEIGHT - base - height, 3),
                    width=BAR,
                    height=round(height, 3),
                    fill=fills[model],
                    model=model,
                    day=day,
                    value=value,
                )
            )
            base += height
    return Chart(
        metric=metric,
        bars=bars,
        width=SLOT * len(series.days),
        height=HEIGHT,
        top=top,
        total=getattr(series.total, metric),
        first=series.days[0],
        last=series.days[-1],
    )
