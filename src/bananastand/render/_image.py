"""Image-to-image: a picture derived from one or more reference images.

An :class:`_ImageJob` converts each reference to RGB (EXIF orientation applied, alpha flattened
onto white, 16-bit and float images scaled), fits it to the output size, joins several references
as soft-seamed panels, colour-grades the result towards the prompt's palette, overlays soft
translucent shapes and a vignette painted at 1/8 resolution, posterizes, and draws rings and the
caption.  The references themselves are never modified.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from bananastand.render._canvas import _Canvas, _draw_caption, _draw_rings, _smoothstep
from bananastand.render._colour import _mix, _palette

_OVERLAY_SCALE = 8  # img2img overlay resolution divisor


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
