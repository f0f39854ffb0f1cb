"""Built-in offline renderer: real-looking abstract pictures with no GPU and no API keys.

Everything here is a pure function (no I/O, no async, no global mutable state):

* :func:`size_for_ratio` maps an aspect-ratio string (``"16:9"``) to an output pixel size, using
  exact-ratio sizes of about one megapixel (multiples of 16) for the common ratios.
* :func:`render` paints a deterministic image for ``(prompt, seed, size, references)``: a gradient
  sky, a glow, soft hills / bubbles / waves and a few crisp details, coloured after colour words in
  the prompt ("orange cat" -> warm orange) or a hash-based palette.  With ``references`` the output
  is the reference(s), fitted to the size, colour-graded, posterized and overlaid with soft shapes
  (image-to-image).  Work is split into ``steps`` real stages reported through ``on_step``.
* :func:`encode` turns an image into PNG / JPEG / WEBP bytes.

Speed comes from painting soft shapes with vectorised numpy at 1/4 resolution, upscaling once with
Pillow's bicubic resize, and drawing only the crisp details at full size.  Randomness is derived
from SHA-256 of the prompt and seed (never ``hash()``, which is salted per process), so the same
inputs give byte-identical pixels on the same platform and library versions.
"""

from __future__ import annotations

import colorsys
import contextlib
import functools
import hashlib
import io
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = ["MAX_SIDE", "SIZES", "encode", "render", "size_for_ratio"]

#: Output sizes of the ten standard ratios: about 1 MP, multiples of 16, and exactly the
#: requested ratio (Gemini's own ~1K table rounds some ratios by up to 3 %).
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
    _reduce(*map(int, key.split(":"))): size for key, size in SIZES.items()
}

#: Largest accepted width or height for :func:`render`.
MAX_SIDE = 8192

_MAX_RATIO_TERM = 21
_TARGET_AREA = 1024 * 1024
_AREA_TOLERANCE = math.log(1.15)  # generic sizes stay within +-15 % of 1024^2 pixels
_RATIO_RE = re.compile(r"(\d{1,4})\s*:\s*(\d{1,4})")

_SCALE = 4  # soft layers are painted at 1/_SCALE of the output resolution
_OVERLAY_SCALE = 8  # img2img overlay resolution divisor
_PNG_LEVEL = 1
_JPEG_QUALITY = 90
_WEBP_QUALITY = 90
_WEBP_METHOD = 2  # 0 (fast) .. 6 (small); 4, Pillow's default, is ~2.5x slower at 1024^2
_FORMATS = {
    "png": "PNG",
    "image/png": "PNG",
    "jpeg": "JPEG",
    "jpg": "JPEG",
    "image/jpeg": "JPEG",
    "webp": "WEBP",
    "image/webp": "WEBP",
}

Colour = tuple[float, float, float]  # RGB, 0..255
StepCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


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
    target = math.log(rw / rh)
    best: tuple[float, float, int, int] | None = None
    for w in range(16, MAX_SIDE + 1, 16):
        h = max(16, round(w * rh / rw / 16) * 16)
        area_err = abs(math.log(w * h / _TARGET_AREA))
        if area_err > _AREA_TOLERANCE:
            continue
        ratio_err = round(abs(math.log(w / h) - target), 9)
        cand = (ratio_err, area_err, w, h)
        if best is None or cand < best:
            best = cand
    assert best is not None  # a 1..21 ratio always has candidates in the area band
    return best[2], best[3]


# --------------------------------------------------------------------------------------------
# Randomness and palette
# --------------------------------------------------------------------------------------------


def _rng_for(prompt: str, seed: int) -> np.random.Generator:
    """Process-independent generator derived from SHA-256 of (prompt, seed)."""
    digest = hashlib.sha256(
        b"bananastand.render/v1\0"
        + prompt.encode("utf-8", "surrogatepass")
        + b"\0"
        + str(int(seed)).encode("ascii")
    ).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))


# word -> (hue degrees, saturation, lightness)
_COLOUR_WORDS: dict[str, tuple[float, float, float]] = {
    "red": (2, 0.75, 0.5),
    "crimson": (348, 0.8, 0.45),
    "scarlet": (5, 0.85, 0.5),
    "ruby": (340, 0.75, 0.4),
    "cherry": (350, 0.8, 0.45),
    "fire": (14, 0.9, 0.5),
    "lava": (8, 0.9, 0.45),
    "orange": (28, 0.9, 0.55),
    "amber": (40, 0.9, 0.5),
    "peach": (24, 0.8, 0.74),
    "coral": (12, 0.8, 0.62),
    "sunset": (18, 0.85, 0.55),
    "autumn": (26, 0.75, 0.45),
    "yellow": (52, 0.9, 0.55),
    "gold": (45, 0.85, 0.5),
    "golden": (45, 0.85, 0.5),
    "lemon": (55, 0.9, 0.6),
    "banana": (50, 0.9, 0.6),
    "sand": (40, 0.45, 0.72),
    "desert": (35, 0.55, 0.62),
    "beige": (38, 0.4, 0.78),
    "brown": (28, 0.5, 0.3),
    "chocolate": (22, 0.5, 0.25),
    "coffee": (25, 0.45, 0.28),
    "green": (120, 0.55, 0.42),
    "lime": (90, 0.75, 0.5),
    "olive": (70, 0.45, 0.35),
    "emerald": (145, 0.7, 0.4),
    "mint": (150, 0.5, 0.72),
    "forest": (130, 0.5, 0.3),
    "jungle": (125, 0.6, 0.32),
    "grass": (105, 0.6, 0.45),
    "teal": (178, 0.6, 0.38),
    "turquoise": (174, 0.7, 0.5),
    "cyan": (186, 0.8, 0.5),
    "aqua": (182, 0.75, 0.55),
    "blue": (218, 0.75, 0.5),
    "azure": (205, 0.8, 0.55),
    "sky": (204, 0.7, 0.68),
    "sea": (195, 0.65, 0.45),
    "ocean": (205, 0.7, 0.4),
    "sapphire": (220, 0.8, 0.4),
    "navy": (228, 0.7, 0.25),
    "ice": (195, 0.5, 0.85),
    "indigo": (250, 0.7, 0.35),
    "purple": (275, 0.6, 0.45),
    "violet": (265, 0.65, 0.55),
    "lavender": (260, 0.5, 0.78),
    "magenta": (305, 0.75, 0.5),
    "pink": (335, 0.7, 0.75),
    "rose": (345, 0.65, 0.6),
}
# word -> (lightness shift, saturation multiplier)
_TONE_WORDS: dict[str, tuple[float, float]] = {
    "dark": (-0.2, 1.0),
    "night": (-0.25, 0.9),
    "midnight": (-0.3, 0.9),
    "black": (-0.3, 0.7),
    "shadow": (-0.15, 0.8),
    "noir": (-0.25, 0.4),
    "bright": (0.12, 1.1),
    "light": (0.1, 0.9),
    "pale": (0.15, 0.6),
    "pastel": (0.18, 0.55),
    "white": (0.22, 0.45),
    "snow": (0.22, 0.4),
    "gray": (0.0, 0.3),
    "grey": (0.0, 0.3),
    "silver": (0.08, 0.25),
    "foggy": (0.08, 0.4),
    "misty": (0.08, 0.5),
    "vivid": (0.0, 1.3),
    "neon": (0.0, 1.4),
}
_SCHEMES: tuple[tuple[float, ...], ...] = (
    (0.0, 28.0, -28.0, 55.0),  # analogous
    (0.0, 180.0, 25.0, 200.0),  # complementary
    (0.0, 120.0, 240.0, 20.0),  # triadic
    (0.0, 150.0, 210.0, -20.0),  # split complementary
    (0.0, -35.0, 200.0, 35.0),  # analogous + accent
)


def _words(prompt: str) -> list[str]:
    return re.findall(r"[a-z]+", prompt.lower())


def _lookup(word: str, table: Mapping[str, tuple[float, ...]]) -> tuple[float, ...] | None:
    if word in table:
        return table[word]
    if word.endswith("s") and word[:-1] in table:
        return table[word[:-1]]
    return None


def _hls(hue_deg: float, light: float, sat: float) -> Colour:
    r, g, b = colorsys.hls_to_rgb(
        (hue_deg % 360.0) / 360.0, min(max(light, 0.02), 0.97), min(max(sat, 0.0), 1.0)
    )
    return (r * 255.0, g * 255.0, b * 255.0)


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


@dataclass(frozen=True)
class _Palette:
    sky_top: Colour
    sky_bottom: Colour
    glow: Colour
    shapes: tuple[Colour, ...]
    ground: tuple[Colour, ...]  # far -> near
    accent: Colour
    night: bool


def _palette(prompt: str, rng: np.random.Generator) -> _Palette:
    words = _words(prompt)
    colours: list[tuple[float, ...]] = []
    shift, sat_mul = 0.0, 1.0
    for word in words:
        colour = _lookup(word, _COLOUR_WORDS)
        if colour is not None and colour not in colours:
            colours.append(colour)
        tone = _lookup(word, _TONE_WORDS)
        if tone is not None:
            shift += tone[0]
            sat_mul *= tone[1]
    shift = max(-0.35, min(0.3, shift))
    if colours:
        base_h, base_s, base_l = colours[0]
        base_h += float(rng.uniform(-12.0, 12.0))
        shift += 0.5 * (base_l - 0.5)
    else:
        base_h, base_s = float(rng.uniform(0.0, 360.0)), float(rng.uniform(0.45, 0.8))
    scheme = _SCHEMES[int(rng.integers(len(_SCHEMES)))]
    hues = [base_h + off + float(rng.uniform(-8.0, 8.0)) for off in scheme]
    for i, extra in enumerate(colours[1:4], start=1):
        hues[i] = extra[0] + float(rng.uniform(-8.0, 8.0))
    sat = min(1.0, base_s * sat_mul)
    night = shift < -0.12 or float(rng.random()) < 0.15

    def col(hue: float, light: float, s: float = 1.0) -> Colour:
        return _hls(hue, light + shift, sat * s)

    top_l = float(rng.uniform(0.12, 0.22)) if night else float(rng.uniform(0.36, 0.56))
    sky_top = col(hues[0] + float(rng.uniform(-10, 10)), top_l, 0.75)
    sky_bottom = col(hues[0] + float(rng.uniform(-30, 30)), top_l + float(rng.uniform(0.22, 0.36)))
    glow = col(hues[0] + float(rng.uniform(-20, 20)), 0.86 if not night else 0.78, 0.9)
    shapes = tuple(
        col(hues[i % len(hues)], float(rng.uniform(0.42, 0.74)), float(rng.uniform(0.7, 1.0)))
        for i in range(6)
    )
    n_ground = 4
    ground_hue = hues[int(rng.integers(1, len(hues)))] if rng.random() < 0.5 else hues[0]
    ground = tuple(
        _mix(
            col(ground_hue + 6.0 * i, 0.42 - 0.09 * i, 0.8),
            sky_bottom,
            0.45 * (n_ground - 1 - i) / (n_ground - 1),
        )
        for i in range(n_ground)
    )
    accent = col(hues[2] if len(hues) > 2 else hues[0] + 180.0, 0.8, 1.0)
    return _Palette(sky_top, sky_bottom, glow, shapes, ground, accent, night)


# --------------------------------------------------------------------------------------------
# Low-resolution soft painting (numpy, float32 canvas in 0..255)
# --------------------------------------------------------------------------------------------


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class _Canvas:
    """Float RGB canvas with coordinates normalised by height (x in [0, w/h], y in [0, 1]).

    ``cover`` records the strongest foreground mask painted at each pixel; with ``alpha=True``
    the canvas starts transparent black and ``rgb`` holds premultiplied colour over ``alpha``.
    """

    def __init__(self, width: int, height: int, *, alpha: bool = False) -> None:
        self.w, self.h = width, height
        self.aspect = width / height
        self.xs = ((np.arange(width, dtype=np.float32) + 0.5) / height)[None, :]
        self.ys = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
        self.rgb = np.zeros((height, width, 3), dtype=np.float32)
        self.cover = np.zeros((height, width), dtype=np.float32)
        self.alpha = np.zeros((height, width), dtype=np.float32) if alpha else None

    def gradient(self, c0: Colour, c1: Colour, angle: float, curve: float) -> None:
        dx, dy = math.sin(angle), math.cos(angle)  # angle 0 = top -> bottom
        t = self.xs * dx + self.ys * dy
        lo = min(0.0, dx * self.aspect) + min(0.0, dy)
        hi = max(0.0, dx * self.aspect) + max(0.0, dy)
        t = np.clip((t - lo) / max(hi - lo, 1e-6), 0.0, 1.0) ** curve
        a, b = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
        self.rgb[...] = a + (b - a) * t[..., None]

    def blend(self, colour: Colour, mask: np.ndarray, *, cover: bool = False) -> None:
        self._blend_region(colour, mask, slice(None), slice(None), cover)

    def _blend_region(
        self, colour: Colour, mask: np.ndarray, rows: slice, cols: slice, cover: bool
    ) -> None:
        region = self.rgb[rows, cols]
        region += (np.asarray(colour, np.float32) - region) * mask[..., None]
        if self.alpha is not None:
            plane = self.alpha[rows, cols]
            plane += (1.0 - plane) * mask
        if cover:
            plane = self.cover[rows, cols]
            np.maximum(plane, mask, out=plane)

    def ellipse(
        self,
        colour: Colour,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        angle: float,
        soft: float,
        alpha: float,
        *,
        cover: bool = False,
    ) -> None:
        """Blend a soft-edged rotated ellipse, computing only inside its bounding box."""
        reach = max(rx, ry)
        x0 = max(0, int((cx - reach) * self.h))
        x1 = min(self.w, int((cx + reach) * self.h) + 2)
        y0 = max(0, int((cy - reach) * self.h))
        y1 = min(self.h, int((cy + reach) * self.h) + 2)
        if x0 >= x1 or y0 >= y1:
            return
        ca, sa = math.cos(angle), math.sin(angle)
        dx, dy = self.xs[:, x0:x1] - cx, self.ys[y0:y1] - cy
        u = (dx * ca + dy * sa) / rx
        v = (dy * ca - dx * sa) / ry
        mask = _smoothstep(1.0, 1.0 - soft, np.sqrt(u * u + v * v)) * np.float32(alpha)
        self._blend_region(colour, mask, slice(y0, y1), slice(x0, x1), cover)

    def glow_mask(self, cx: float, cy: float, radius: float) -> np.ndarray:
        d2 = (self.xs - cx) ** 2 + (self.ys - cy) ** 2
        return np.exp(d2 * np.float32(-1.0 / (radius * radius)))

    def ridge_mask(self, line: np.ndarray, soft: float) -> np.ndarray:
        """Mask of everything below ``line`` (one y per column), with a soft edge."""
        return _smoothstep(-soft, soft, self.ys - line[None, :])

    def wave_line(self, rng: np.random.Generator, base: float, amp: float, n: int) -> np.ndarray:
        x = self.xs[0]
        line = np.full_like(x, base)
        for k in range(n):
            freq = float(rng.uniform(1.0, 4.0)) * (k + 1) * math.pi
            line += (amp / (k + 1)) * np.sin(x * freq + float(rng.uniform(0, 2 * math.pi)))
        return line

    def to_image(self, size: tuple[int, int]) -> Image.Image:
        arr = np.clip(self.rgb + 0.5, 0.0, 255.0).astype(np.uint8)
        small = Image.fromarray(arr)
        return small if small.size == size else small.resize(size, Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------------------------
# Shared full-resolution details
# --------------------------------------------------------------------------------------------


_FONT_LOCK = threading.Lock()  # cached FreeType faces are not safe to share between threads


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _caption_text(
    prompt: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_w: int
) -> str:
    text = " ".join("".join(ch if " " <= ch <= "~" else " " for ch in prompt).split())
    if not text or font.getlength(text) <= max_w:
        return text
    while text and font.getlength(text + "...") > max_w:
        text = text[: max(0, len(text) - max(1, len(text) // 8))].rstrip()
    return text + "..." if text else ""


def _draw_caption(img: Image.Image, prompt: str) -> None:
    w, h = img.size
    if w < 96 or h < 96:
        return
    size = max(11, min(w, h) // 48)
    pad = max(4, size // 2)
    with _FONT_LOCK:
        font = _font(size)
        text = _caption_text(prompt, font, min(w - 4 * pad, 40 * size))
        if not text:
            return
        left, top, right, bottom = font.getbbox(text)
        x0, y1 = 2 * pad, h - 2 * pad
        y0 = y1 - (bottom - top) - 2 * pad
        draw = ImageDraw.Draw(img, "RGBA")
        box = (x0, y0, x0 + (right - left) + 2 * pad, y1)
        draw.rounded_rectangle(box, radius=pad, fill=(10, 10, 16, 120))
        draw.text((x0 + pad - left, y0 + pad - top), text, font=font, fill=(255, 255, 255, 235))


def _rgba(colour: Colour, alpha: float) -> tuple[int, int, int, int]:
    return (int(colour[0]), int(colour[1]), int(colour[2]), int(max(0.0, min(1.0, alpha)) * 255))


def _draw_rings(img: Image.Image, rng: np.random.Generator, colour: Colour, count: int) -> None:
    """Thin translucent circle outlines (crisp, full resolution)."""
    w, h = img.size
    draw = ImageDraw.Draw(img, "RGBA")
    width = max(1, min(w, h) // 400)
    for _ in range(count):
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        r = float(rng.uniform(0.03, 0.18)) * min(w, h)
        fill = _rgba(colour, float(rng.uniform(0.18, 0.45)))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=width)


# --------------------------------------------------------------------------------------------
# Text-to-image
# --------------------------------------------------------------------------------------------


class _TextJob:
    """Paints one text-to-image picture as a list of stage operations."""

    def __init__(self, prompt: str, rng: np.random.Generator, width: int, height: int) -> None:
        self.prompt, self.rng, self.size = prompt, rng, (width, height)
        self.pal = _palette(prompt, rng)
        self.canvas = _Canvas(max(2, -(-width // _SCALE)), max(2, -(-height // _SCALE)))
        self.layout = str(rng.choice(["landscape", "bubbles", "waves"], p=[0.45, 0.3, 0.25]))
        self.sun = (
            float(rng.uniform(0.12, 0.88)) * self.canvas.aspect,
            float(rng.uniform(0.15, 0.5)),
            float(rng.uniform(0.05, 0.11)),
        )
        self.image: Image.Image | None = None

    def ops(self, *, caption: bool) -> list[Callable[[], None]]:
        soft: list[Callable[[], None]] = [self._sky, self._glow]
        if self.layout == "landscape":
            soft.append(self._clouds)
            n = int(self.rng.integers(2, 5))
            soft += [functools.partial(self._hill, i, n) for i in range(n)]
        elif self.layout == "bubbles":
            soft += [functools.partial(self._bubbles, i) for i in range(3)]
        else:
            n = int(self.rng.integers(3, 6))
            soft += [functools.partial(self._wave, i, n) for i in range(n)]
        tail = [self._upscale, self._details]
        return [*soft, *tail, self._caption] if caption else [*soft, *tail]

    def _sky(self) -> None:
        angle = float(self.rng.normal(0.0, 0.25))
        if self.layout == "bubbles":
            angle += float(self.rng.choice([-0.8, 0.8]))
        self.canvas.gradient(
            self.pal.sky_top, self.pal.sky_bottom, angle, float(self.rng.uniform(0.6, 1.6))
        )

    def _glow(self) -> None:
        cx, cy, r = self.sun
        c = self.canvas
        c.blend(self.pal.glow, c.glow_mask(cx, cy, r * float(self.rng.uniform(3.0, 6.0))) * 0.55)
        if self.layout != "bubbles":
            c.ellipse(self.pal.glow, cx, cy, r, r, 0.0, 0.25, 0.95)

    def _clouds(self) -> None:
        c, rng = self.canvas, self.rng
        white = _mix(self.pal.glow, (255.0, 255.0, 255.0), 0.5)
        for _ in range(int(rng.integers(2, 6))):
            rx = float(rng.uniform(0.12, 0.35))
            c.ellipse(
                white,
                float(rng.uniform(0, c.aspect)),
                float(rng.uniform(0.08, 0.45)),
                rx,
                rx * float(rng.uniform(0.12, 0.3)),
                float(rng.normal(0, 0.08)),
                0.9,
                float(rng.uniform(0.25, 0.55)),
            )

    def _hill(self, i: int, n: int) -> None:
        c, rng = self.canvas, self.rng
        base = 0.5 + 0.4 * (i + 1) / (n + 1) + float(rng.uniform(-0.05, 0.05))
        line = c.wave_line(rng, base, float(rng.uniform(0.03, 0.12)), 3)
        colour = self.pal.ground[min(len(self.pal.ground) - 1, i + len(self.pal.ground) - n)]
        c.blend(colour, c.ridge_mask(line, 0.004 + 0.002 * i), cover=True)

    def _bubbles(self, group: int) -> None:
        c, rng = self.canvas, self.rng
        for _ in range(int(rng.integers(3, 6))):
            r = float(rng.uniform(0.06, 0.3)) * (1.0 - 0.25 * group)
            c.ellipse(
                self.pal.shapes[int(rng.integers(len(self.pal.shapes)))],
                float(rng.uniform(0, c.aspect)),
                float(rng.uniform(0.05, 0.95)),
                r,
                r * float(rng.uniform(0.8, 1.25)),
                float(rng.uniform(0, math.pi)),
                float(rng.uniform(0.15, 0.9)),
                float(rng.uniform(0.35, 0.85)),
                cover=True,
            )

    def _wave(self, i: int, n: int) -> None:
        c, rng = self.canvas, self.rng
        base = 0.35 + 0.6 * (i + 1) / (n + 1)
        line = c.wave_line(rng, base, float(rng.uniform(0.02, 0.07)), 2)
        colour = self.pal.shapes[i % len(self.pal.shapes)]
        colour = _mix(colour, self.pal.ground[-1], 0.25 * i / max(1, n - 1))
        c.blend(colour, c.ridge_mask(line, 0.006) * float(rng.uniform(0.55, 0.9)), cover=True)

    def _upscale(self) -> None:
        self.image = self.canvas.to_image(self.size)

    def _details(self) -> None:
        assert self.image is not None
        img, rng, c = self.image, self.rng, self.canvas
        w, h = self.size
        if self.layout == "bubbles":
            _draw_rings(img, rng, self.pal.accent, int(rng.integers(3, 8)))
        # sparkles / stars, only where no foreground shape was painted
        n = int(rng.integers(40, 120)) if self.pal.night else int(rng.integers(0, 25))
        xs = rng.uniform(0, w, n)
        ys = rng.uniform(0, h * (0.6 if self.layout == "landscape" else 1.0), n)
        sizes = rng.uniform(0.6, 2.2, n) * max(1.0, min(w, h) / 1024)
        alphas = rng.uniform(0.35, 0.95, n)
        cov = c.cover[
            np.minimum((ys * c.h / h).astype(int), c.h - 1),
            np.minimum((xs * c.w / w).astype(int), c.w - 1),
        ]
        draw = ImageDraw.Draw(img, "RGBA")
        star = _mix(self.pal.glow, (255.0, 255.0, 255.0), 0.7)
        for x, y, s, a, cv in zip(xs, ys, sizes, alphas, cov, strict=True):
            if cv < 0.05:
                draw.ellipse((x - s, y - s, x + s, y + s), fill=_rgba(star, float(a)))

    def _caption(self) -> None:
        assert self.image is not None
        _draw_caption(self.image, self.prompt)


# --------------------------------------------------------------------------------------------
# Image-to-image
# --------------------------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any-mode reference -> RGB: EXIF orientation applied, alpha flattened, 16-bit scaled."""
    with contextlib.suppress(Exception):  # broken EXIF must not break rendering
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0 and mode == "F":
            arr = arr * 255.0
        elif lo >= 0.0 and hi > 255.0 and hi <= 65535.0:
            arr = arr / 257.0
        elif lo < 0.0 or hi > 65535.0:
            arr = (arr - lo) * (255.0 / max(hi - lo, 1e-9))
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            flat.alpha_composite(rgba)
            return flat.convert("RGB")
        return image.convert("RGB")
    except ValueError:
        try:
            return image.convert("RGBA").convert("RGB")
        except ValueError as exc:
            raise ValueError(f"unsupported reference image mode {mode!r}") from exc


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the target ratio and resize (like ``ImageOps.fit``, with fast reduction)."""
    w, h = size
    iw, ih = image.size
    if (iw, ih) == size:
        return image
    if iw * h > ih * w:  # too wide
        cw, ch = ih * w / h, float(ih)
    else:
        cw, ch = float(iw), iw * h / w
    box = ((iw - cw) / 2, (ih - ch) / 2, (iw + cw) / 2, (ih + ch) / 2)
    return image.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)


class _ImageJob:
    """Derives a picture from reference image(s) as a list of stage operations."""

    def __init__(
        self,
        prompt: str,
        rng: np.random.Generator,
        width: int,
        height: int,
        references: Sequence[Image.Image],
    ) -> None:
        self.prompt, self.rng, self.size = prompt, rng, (width, height)
        self.refs: list[Image.Image] = list(references)
        self.pal = _palette(prompt, rng)
        self.image: Image.Image | None = None
        self.overlay: tuple[Image.Image, Image.Image] | None = None

    def ops(self, *, caption: bool) -> list[Callable[[], None]]:
        prepare = [functools.partial(self._prepare, i) for i in range(len(self.refs))]
        return [
            *prepare,
            self._combine,
            self._grade,
            self._paint_overlay,
            self._apply_overlay,
            self._posterize,
            self._details,
            *([self._caption] if caption else []),
        ]

    def _prepare(self, i: int) -> None:
        self.refs[i] = _fit(_to_rgb(self.refs[i]), self.size)

    def _combine(self) -> None:
        """One reference: itself.  Several: soft-seamed panels along a seed-chosen axis."""
        base = self.refs[0]
        k = len(self.refs)
        if k > 1:
            base = base.copy()
            w, h = self.size
            vertical = bool(self.rng.random() < 0.5)
            length = h if vertical else w
            pos = (np.arange(length, dtype=np.float32) + 0.5) / length * k
            feather = 0.08 * k
            for i in range(1, k):
                ramp = _smoothstep(i - feather, i + feather, pos)
                row = np.clip(ramp * 255.0 + 0.5, 0, 255).astype(np.uint8)
                plane = np.broadcast_to(row[:, None] if vertical else row[None, :], (h, w))
                mask = Image.fromarray(np.ascontiguousarray(plane))
                base = Image.composite(self.refs[i], base, mask)
        self.image = base

    def _grade(self) -> None:
        """Global colour grade towards the prompt palette (one 3x4 matrix, C speed)."""
        assert self.image is not None
        tint = np.asarray(_mix(self.pal.sky_top, self.pal.glow, 0.25), np.float64) / 255.0
        luma = np.array([0.299, 0.587, 0.114])
        gain = tint / max(float(tint @ luma), 0.15)
        amount = float(self.rng.uniform(0.22, 0.38))
        matrix = (1.0 - amount) * np.eye(3) + amount * np.outer(gain, luma)
        lift = tint * float(self.rng.uniform(4.0, 14.0))
        flat = np.concatenate([matrix, lift[:, None]], axis=1).ravel()
        self.image = self.image.convert("RGB", tuple(float(v) for v in flat))

    def _paint_overlay(self) -> None:
        """Soft translucent blobs plus a vignette, painted at 1/8 resolution (premultiplied)."""
        w, h = self.size
        c = _Canvas(max(2, -(-w // _OVERLAY_SCALE)), max(2, -(-h // _OVERLAY_SCALE)), alpha=True)
        rng = self.rng
        for _ in range(int(rng.integers(3, 7))):
            r = float(rng.uniform(0.08, 0.3))
            c.ellipse(
                self.pal.shapes[int(rng.integers(len(self.pal.shapes)))],
                float(rng.uniform(0, c.aspect)),
                float(rng.uniform(0, 1)),
                r,
                r * float(rng.uniform(0.6, 1.4)),
                float(rng.uniform(0, math.pi)),
                float(rng.uniform(0.5, 1.0)),
                float(rng.uniform(0.15, 0.32)),
            )
        dist = np.sqrt(((c.xs - c.aspect / 2) / c.aspect) ** 2 + (c.ys - 0.5) ** 2)
        vignette = _smoothstep(0.35, 0.75, dist) * np.float32(rng.uniform(0.2, 0.4))
        c.blend(_mix(self.pal.ground[-1], (0.0, 0.0, 0.0), 0.6), vignette)
        assert c.alpha is not None
        c.rgb /= np.maximum(c.alpha, 1e-4)[..., None]  # un-premultiply
        mask = Image.fromarray(np.clip(c.alpha * 255.0 + 0.5, 0, 255).astype(np.uint8))
        self.overlay = (c.to_image(self.size), mask.resize(self.size, Image.Resampling.BILINEAR))

    def _apply_overlay(self) -> None:
        assert self.image is not None and self.overlay is not None
        self.image = Image.composite(self.overlay[0], self.image, self.overlay[1])
        self.overlay = None

    def _posterize(self) -> None:
        assert self.image is not None
        self.image = ImageOps.posterize(self.image, int(self.rng.choice([5, 5, 6])))

    def _details(self) -> None:
        assert self.image is not None
        _draw_rings(self.image, self.rng, self.pal.accent, int(self.rng.integers(2, 6)))

    def _caption(self) -> None:
        assert self.image is not None
        _draw_caption(self.image, self.prompt)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _run_stages(ops: list[Callable[[], None]], steps: int, on_step: StepCallback | None) -> None:
    """Run ``ops`` split into ``steps`` contiguous stages, reporting after each stage."""
    done = 0
    for i in range(1, steps + 1):
        end = i * len(ops) // steps
        for op in ops[done:end]:
            op()
        done = end
        if on_step is not None:
            on_step(i, steps)


def render(
    prompt: str,
    *,
    seed: int,
    width: int,
    height: int,
    references: Sequence[Image.Image] = (),
    steps: int = 4,
    on_step: StepCallback | None = None,
    caption: bool = True,
) -> Image.Image:
    """Render an RGB ``width`` x ``height`` picture for ``prompt`` and ``seed``.

    Deterministic: the same ``(prompt, seed, width, height, references)`` give identical pixels
    (``steps`` and ``on_step`` never change the output).  With ``references`` the result is
    derived from them (fitted, colour-graded, posterized and overlaid with soft shapes); the
    references are not modified.  The work runs in ``steps`` stages and ``on_step(i, steps)`` is
    called after stage ``i`` (1..steps); an exception raised by ``on_step`` aborts the render.
    ``caption=False`` leaves out the small prompt caption at the bottom left.
    """
    if not isinstance(prompt, str):
        raise TypeError("prompt must be a str")
    for name, value in (("width", width), ("height", height), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"width and height must be 1..{MAX_SIDE}, got {width}x{height}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rng = _rng_for(prompt, seed)
    job: _TextJob | _ImageJob
    if references:
        job = _ImageJob(prompt, rng, width, height, references)
    else:
        job = _TextJob(prompt, rng, width, height)
    _run_stages(job.ops(caption=caption), steps, on_step)
    assert job.image is not None
    return job.image if job.image.mode == "RGB" else job.image.convert("RGB")


def encode(image: Image.Image, fmt: str = "png") -> bytes:
    """Encode ``image`` as ``"png"`` (zlib level 1), ``"jpeg"``/``"jpg"`` or ``"webp"`` (q 90).

    MIME types (``"image/png"``) and a leading dot are accepted too; anything else raises
    ``ValueError``.  JPEG output drops alpha (non-RGB/L images are converted to RGB).
    """
    pil_format = _FORMATS.get(fmt.strip().lower().lstrip("."))
    if pil_format is None:
        raise ValueError(f"unsupported image format {fmt!r}; use png, jpeg or webp")
    buf = io.BytesIO()
    if pil_format == "PNG":
        image.save(buf, "PNG", compress_level=_PNG_LEVEL)
    elif pil_format == "JPEG":
        rgb = image if image.mode in ("RGB", "L") else image.convert("RGB")
        rgb.save(buf, "JPEG", quality=_JPEG_QUALITY)
    else:
        image.save(buf, "WEBP", quality=_WEBP_QUALITY, method=_WEBP_METHOD)
    return buf.getvalue()
