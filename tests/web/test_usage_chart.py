"""The usage chart's arithmetic: stacked segments, a round scale, stable colours."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from bananastand.usage import Series, Tally
from bananastand.web.usage_chart import HEIGHT, PALETTE, SLOT, colours, nice_top, stacked


def series() -> Series:
    first = date(2026, 3, 1)
    made = Series(
        days=[first + timedelta(days=n) for n in range(30)],
        since=datetime(2026, 3, 1, tzinfo=UTC),
    )
    for day, model, generations, images, credits in (
        (first, "a", 1, 2, 2),
        (first, "b", 1, 1, 4),
        (first + timedelta(days=29), "a", 2, 3, 3),
    ):
        made.by_day.setdefault(day, {})[model] = Tally(generations, images, credits)
        made.by_model.setdefault(model, Tally()).add(generations, images, credits)
        made.total.add(generations, images, credits)
    return made


@pytest.mark.parametrize(
    ("value", "top"), [(0, 2), (1, 2), (3, 4), (5, 6), (9, 10), (11, 20), (41, 60), (999, 1000)]
)
def test_the_scale_is_round_and_its_middle_whole(value: int, top: int) -> None:
    assert nice_top(value) == top
    assert top % 2 == 0


def test_days_stack_their_models_biggest_spender_at_the_bottom() -> None:
    data = series()
    assert data.models == ["a", "b"]  # 5 credits against 4
    chart = stacked(data, "credits")
    assert (chart.width, chart.height, chart.top, chart.total) == (30 * SLOT, HEIGHT, 6, 9)
    first_day = [bar for bar in chart.bars if bar.day == data.days[0]]
    assert [(bar.model, bar.value) for bar in first_day] == [("a", 2), ("b", 4)]
    bottom, upper = first_day
    assert bottom.y + bottom.height == pytest.approx(HEIGHT)  # on the axis
    assert upper.y + upper.height == pytest.approx(bottom.y)  # on top of the first
    assert upper.y == pytest.approx(0)  # 6 of a scale of 6: the full height
    last = [bar for bar in chart.bars if bar.day == data.days[-1]]
    assert [(bar.model, bar.value, bar.x) for bar in last] == [("a", 3, 29 * SLOT + 1.5)]
    assert len(chart.bars) == 3  # days without use have no bar
    images = stacked(data, "images")
    assert [bar.value for bar in images.bars] == [2, 1, 3]
    assert (images.top, images.total) == (4, 6)


def test_each_model_keeps_one_colour_in_every_chart() -> None:
    fills = colours([f"m{n}" for n in range(10)])
    assert fills["m0"] == PALETTE[0] and fills["m8"] == PALETTE[0]
    data = series()
    for metric in ("credits", "images"):
        chart = stacked(data, metric)  # type: ignore[arg-type]
        assert {bar.model: bar.fill for bar in chart.bars} == {"a": PALETTE[0], "b": PALETTE[1]}
