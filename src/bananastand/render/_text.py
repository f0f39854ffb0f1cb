"""Text-to-image: a deterministic abstract picture painted from the prompt and the seed.

A :class:`_TextJob` picks a palette and a layout (landscape, bubbles or waves), paints a gradient
sky, a glow and soft hills / bubbles / waves at 1/4 resolution, upscales once with Pillow's
bicubic resize, then draws the crisp details at full size: stars where no shape was painted,
rings in the bubbles layout, and the caption.  Its ``ops`` are the stage operations that
:func:`bananastand.render.render` runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from bananastand.render._canvas import _Canvas, _draw_caption, _draw_rings, _rgba
from bananastand.render._colour import _mix, _palette

_SCALE = 4  # soft layers are painted at 1/_SCALE of the output resolution


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
