"""Output sizes: aspect-ratio strings (``"16:9"``) to pixel sizes of about one megapixel.

The ten common ratios come from :data:`SIZES` (exact ratios, multiples of 16); any other ``"W:H"``
with terms 1..21 gets the multiple-of-16 size of about 1024^2 pixels whose ratio is closest.
:data:`MAX_SIDE` bounds the width and height that :func:`bananastand.render.render` accepts.
"""

from __future__ import annotations

import math
import re

from bananastand.aspect_ratios import parse_ratio, ratio_distance

#: Output sizes of the ten standard ratios (`bananastand.aspect_ratios.STANDARD_RATIOS`): about
#: 1 MP, multiples of 16, and exactly the requested ratio (Gemini's own ~1K table rounds some
#: ratios by up to 3 %).
SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1152),
    "4:3": (1152, 864),
    "4:5": (896, 1120),
    "5:4": (1120, 896),
    "9:16": (720, 1280),
    "16:9": (1280, 720),
    "21:9": (1344, 576),
}


def _reduce(rw: int, rh: int) -> tuple[int, int]:
    g = math.gcd(rw, rh)
    return rw // g, rh // g


_SIZES_BY_REDUCED: dict[tuple[int, int], tuple[int, int]] = {
    _reduce(*(int(term) for term in parse_ratio(key))): size for key, size in SIZES.items()
}

#: Largest accepted width or height for :func:`bananastand.render.render`.
MAX_SIDE = 8192

_MAX_RATIO_TERM = 21
_TARGET_AREA = 1024 * 1024
_AREA_TOLERANCE = math.log(1.15)  # generic sizes stay within +-15 % of 1024^2 pixels
_RATIO_RE = re.compile(r"(\d{1,4})\s*:\s*(\d{1,4})")


def size_for_ratio(aspect_ratio: str | None) -> tuple[int, int]:
    """Return ``(width, height)`` for an aspect ratio such as ``"16:9"``; ``None`` -> 1024x1024.

    The ten common ratios use :data:`SIZES` (exact ratios).  Any other ``"W:H"`` with integer
    terms 1..21 gets about 1024^2 pixels, both sides multiples of 16, ratio as close as possible.
    Ratios are reduced first, so ``"2:2"`` is ``"1:1"``.  Anything else raises ``ValueError``.
    """
    if aspect_ratio is None:
        return SIZES["1:1"]
    if not isinstance(aspect_ratio, str):
        raise ValueError(f"aspect ratio must be a 'W:H' string, got {type(aspect_ratio).__name__}")
    match = _RATIO_RE.fullmatch(aspect_ratio.strip())
    if match is None:
        raise ValueError(f"unsupported aspect ratio {aspect_ratio!r}; expected 'W:H', e.g. '16:9'")
    rw, rh = int(match.group(1)), int(match.group(2))
    if not (1 <= rw <= _MAX_RATIO_TERM and 1 <= rh <= _MAX_RATIO_TERM):
        raise ValueError(
            f"unsupported aspect ratio {aspect_ratio!r}; both terms must be 1..{_MAX_RATIO_TERM}"
        )
    rw, rh = _reduce(rw, rh)
    return _SIZES_BY_REDUCED.get((rw, rh)) or _size_near_area(rw, rh)


def _size_near_area(rw: int, rh: int) -> tuple[int, int]:
    """Multiple-of-16 size of about 1024^2 pixels whose ratio is closest to ``rw:rh``."""
    target = rw / rh
    best: tuple[float, float, int, int] | None = None
    for w in range(16, MAX_SIDE + 1, 16):
        h = max(16, round(w * rh / rw / 16) * 16)
        area_err = abs(math.log(w * h / _TARGET_AREA))
        if area_err > _AREA_TOLERANCE:
            continue
        ratio_err = round(ratio_distance(w / h, target), 9)
        cand = (ratio_err, area_err, w, h)
        if best is None or cand < best:
            best = cand
    assert best is not None  # a 1..21 ratio always has candidates in the area band
    return best[2], best[3]
