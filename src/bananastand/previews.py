"""Stream previews: a small picture of a generation in progress, carried as a
data URL on stream `status` events (`data.previewImage`, an extension).

Backends that can show their work (see `providers.base.Previews`) hand any
PIL image to their progress callback; the executor shrinks and encodes it here,
in a worker thread, before publishing the event.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

FORMATS = {
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
    "png": ("PNG", "image/png"),
}
QUALITY = 70  # JPEG and WebP: a preview is seen for a moment, small beats sharp


def data_url(image: Image.Image, *, max_side: int, fmt: str = "jpeg") -> str:
    """`image` shrunk to at most `max_side` pixels on its longest side (never
    enlarged), as a `data:image/…;base64,` URL."""
    pil_format, mime = FORMATS[fmt]
    picture = image.convert("RGB")  # a new image: the caller's is left alone
    picture.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    if pil_format == "PNG":
        picture.save(buffer, pil_format, optimize=False)
    else:
        picture.save(buffer, pil_format, quality=QUALITY)
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def without_preview(event: dict[str, Any]) -> dict[str, Any]:
    """The event as it would be with previews off (no `data` if only a preview)."""
    data = event.get("data")
    if not isinstance(data, dict) or "previewImage" not in data:
        return event
    rest = {key: value for key, value in data.items() if key != "previewImage"}
    event = {key: value for key, value in event.items() if key != "data"}
    return {**event, "data": rest} if rest else event
