"""Aspect-ratio arithmetic: reading `"W:H"`, comparing ratios, sizing outputs.

Dependency-free, so every part of the package (API, providers, renderer) can use
it. Ratios are compared in log scale, where 2:1 and 1:2 are equally far from
1:1; ties go to the candidate listed first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "STANDARD_RATIOS",
    "nearest_ratio",
    "parse_ratio",
    "ratio_distance",
    "ratio_value",
    "size_for_area",
]

#: The ten common ratios (the built-in renderer's exact sizes, Gemini's list).
STANDARD_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")

#: `size_for_area` clamps ratios to this many to one (either way).
MAX_STRETCH = 8.0


def parse_ratio(text: str) -> tuple[float, float]:
    """`"16:9"` -> `(16.0, 9.0)`. Raises ValueError unless `text` is `W:H` with
    positive terms whose quotient is finite."""
    width, sep, height = text.partition(":")
    if not sep:
        raise ValueError(f"aspect ratio {text!r} is not W:H")
    w, h = float(width), float(height)
    if not (w > 0 and h > 0 and math.isfinite(w / h)):
        raise ValueError(f"aspect ratio {text!r} is not W:H")
    return w, h


def ratio_value(text: str) -> float:
    """`"16:9"` -> 16/9 (always positive and finite); ValueError as `parse_ratio`."""
    w, h = parse_ratio(text)
    return w / h


def ratio_distance(a: float, b: float) -> float:
    """How far apart two width/height quotients are, in log scale (0: the same)."""
    return abs(math.log(a) - math.log(b))


def nearest_ratio(width: float, height: float, candidates: Iterable[str] = STANDARD_RATIOS) -> str:
    """The candidate `"W:H"` closest (in log scale) to width:height; the first of
    equally close ones. ValueError when a candidate is not `W:H` or none is given."""
    target = width / height
    return min(candidates, key=lambda ratio: ratio_distance(ratio_value(ratio), target))


def size_for_area(aspect: float, side: int, *, multiple: int = 8) -> tuple[int, int]:
    """(width, height) with width/height close to `aspect` and about the area of a
    `side` x `side` square; each side a multiple of `multiple` (at least one
    `multiple`). `aspect` is clamped to 1:MAX_STRETCH..MAX_STRETCH:1."""
    aspect = min(max(aspect, 1 / MAX_STRETCH), MAX_STRETCH)
    width = side * math.sqrt(aspect)
    height = side / math.sqrt(aspect)
    return (
        max(multiple, round(width / multiple) * multiple),
        max(multiple, round(height / multiple) * multiple),
    )
