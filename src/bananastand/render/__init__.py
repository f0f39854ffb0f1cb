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

This module is the whole public surface; the pieces live in private modules, one concept each:
``_sizes`` (aspect ratios -> pixel sizes), ``_colour`` (the palette a prompt asks for),
``_canvas`` (the soft low-resolution canvas and the crisp full-size details: rings, caption),
``_text`` (the text-to-image job) and ``_image`` (the image-to-image job).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from bananastand.render._image import _ImageJob
from bananastand.render._sizes import MAX_SIDE, SIZES, size_for_ratio
from bananastand.render._text import _TextJob

__all__ = ["MAX_SIDE", "SIZES", "encode", "render", "size_for_ratio"]

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

StepCallback = Callable[[int, int], None]


def _rng_for(prompt: str, seed: int) -> np.random.Generator:
    """Process-independent generator derived from SHA-256 of (prompt, seed)."""
    digest = hashlib.sha256(
        b"bananastand.render/v1\0"
        + prompt.encode("utf-8", "surrogatepass")
        + b"\0"
        + str(int(seed)).encode("ascii")
    ).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))


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
