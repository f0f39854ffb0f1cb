"""Drawing primitives: the low-resolution soft canvas and the crisp full-resolution details.

:class:`_Canvas` paints soft layers (gradients, rotated ellipses, glows, ridges) with vectorised
numpy on a float32 RGB canvas in 0..255 at a fraction of the output resolution, and upscales once
to the output size (``to_image``).  The crisp details are drawn afterwards with Pillow at full
size: thin translucent rings (:func:`_draw_rings`) and the small prompt caption at the bottom left
(:func:`_draw_caption`, with Pillow's default font, cached and guarded by a lock).
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bananastand.render._colour import Colour


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
        line: np.ndarray = np.full_like(x, base)
        for k in range(n):
            freq = float(rng.uniform(1.0, 4.0)) * (k + 1) * math.pi
            line += (amp / (k + 1)) * np.sin(x * freq + float(rng.uniform(0, 2 * math.pi)))
        return line

    def to_image(self, size: tuple[int, int]) -> Image.Image:
        arr = np.clip(self.rgb + 0.5, 0.0, 255.0).astype(np.uint8)
        small = Image.fromarray(arr)
        return small if small.size == size else small.resize(size, Image.Resampling.BICUBIC)


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
