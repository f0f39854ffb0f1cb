"""`bananastand.aspect_ratios`: the one home of "W:H" arithmetic."""

from __future__ import annotations

import math

import pytest

from bananastand import render
from bananastand.aspect_ratios import (
    STANDARD_RATIOS,
    nearest_ratio,
    parse_ratio,
    ratio_distance,
    ratio_value,
    size_for_area,
)


def test_parse_ratio_reads_positive_w_h() -> None:
    assert parse_ratio("16:9") == (16.0, 9.0)
    assert parse_ratio("1.5:1") == (1.5, 1.0)
    assert ratio_value("4:3") == pytest.approx(4 / 3)


@pytest.mark.parametrize("text", ["16x9", "16", "0:1", "1:0", "-1:2", "inf:1", "nan:1", ""])
def test_parse_ratio_refuses_what_is_not_w_h(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ratio(text)


def test_ratio_distance_is_symmetric_in_log_scale() -> None:
    assert ratio_distance(2.0, 1.0) == pytest.approx(ratio_distance(0.5, 1.0))
    assert ratio_distance(16 / 9, 16 / 9) == 0.0
    assert ratio_distance(2.0, 1.0) == pytest.approx(math.log(2))


def test_nearest_ratio() -> None:
    assert nearest_ratio(1920, 1080) == "16:9"
    assert nearest_ratio(1080, 1920) == "9:16"
    assert nearest_ratio(1000, 1010) == "1:1"
    assert nearest_ratio(3000, 1000) == "21:9"  # the widest there is
    assert nearest_ratio(1536, 1024, ["1:1", "16:9"]) == "16:9"
    # equally far (in log scale) from 1:2 and 2:1: the first listed wins
    assert nearest_ratio(1, 1, ["2:1", "1:2"]) == "2:1"
    assert nearest_ratio(1, 1, ["1:2", "2:1"]) == "1:2"


def test_standard_ratios_are_the_renderers_table() -> None:
    assert tuple(render.SIZES) == STANDARD_RATIOS


def test_size_for_area_keeps_the_area_and_the_multiple() -> None:
    assert size_for_area(1.0, 512) == (512, 512)
    assert size_for_area(16 / 9, 512) == (680, 384)
    assert size_for_area(16 / 9, 1024, multiple=64) == (1344, 768)
    assert size_for_area(1000.0, 64) == size_for_area(8.0, 64)  # clamped to 8:1
    assert size_for_area(0.001, 64) == size_for_area(1 / 8, 64)
    assert size_for_area(8.0, 8) == (24, 8)  # never below one multiple
