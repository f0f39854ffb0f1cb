"""Thumbnails: small renditions of stored images for the console's lists.

Made once, the first time a thumbnail is asked for (see `api.images`), and kept
next to its image in storage under a name derived from the image id
(`storage.thumb_key`), so they need no record of their own and are deleted
with the image. Not made when the image is stored: a thumbnail costs more CPU
than everything else a generation request does, and most API images are
never looked at in the console.

WebP when this Pillow can write it, else JPEG. Encoding runs in a worker
thread: callers use `make_async`.
"""

from __future__ import annotations

import asyncio
import io
from typing import BinaryIO

from PIL import Image, features

MAX_SIDE = 256
SIZE_PARAM = "thumb"  # `?size=thumb` on an image's signed URL asks for its thumbnail
QUALITY = 75

if features.check("webp"):
    FORMAT, EXTENSION, MIME = "WEBP", "webp", "image/webp"
else:  # pragma: no cover - Pillow built without libwebp
    FORMAT, EXTENSION, MIME = "JPEG", "jpg", "image/jpeg"


def size(width: int, height: int) -> tuple[int, int]:
    """A thumbnail's pixel size for an image of `width` by `height` (never enlarged)."""
    scale = min(1.0, MAX_SIDE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def make(source: bytes | BinaryIO) -> bytes:
    """The thumbnail of an encoded image (bytes or an open binary file)."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        # JPEG sources decode at a reduced scale straight away (a no-op for others).
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))
        picture = image.convert("RGBA" if _has_alpha(image) and FORMAT == "WEBP" else "RGB")
    wanted = size(*picture.size)
    if wanted != picture.size:
        picture = picture.resize(wanted, Image.Resampling.LANCZOS, reducing_gap=2.0)
    buffer = io.BytesIO()
    if FORMAT == "WEBP":
        picture.save(buffer, FORMAT, quality=QUALITY, method=4)
    else:
        picture.save(buffer, FORMAT, quality=QUALITY, optimize=True)
    return buffer.getvalue()


async def make_async(source: bytes | BinaryIO) -> bytes:
    return await asyncio.to_thread(make, source)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
