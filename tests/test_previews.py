"""Stream previews on their own: the data URL encoder, and leaving them out."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from bananastand.previews import data_url, without_preview


def decode(url: str) -> Image.Image:
    header, _, payload = url.partition(",")
    assert header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


@pytest.mark.parametrize(
    ("fmt", "mime", "pil"),
    [("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP"), ("png", "image/png", "PNG")],
)
def test_a_preview_is_shrunk_to_its_longest_side_and_encoded(fmt: str, mime: str, pil: str) -> None:
    original = Image.new("RGBA", (1536, 1024), (10, 200, 30, 255))
    url = data_url(original, max_side=256, fmt=fmt)
    assert url.startswith(f"data:{mime};base64,")
    preview = decode(url)
    assert preview.format == pil
    assert preview.size == (256, 171)
    assert original.size == (1536, 1024)  # the caller's image is left alone
    red, green, blue = preview.convert("RGB").getpixel((128, 85))
    assert abs(red - 10) <= 6 and abs(green - 200) <= 6 and abs(blue - 30) <= 6


def test_a_small_preview_is_never_enlarged_and_stays_small() -> None:
    assert decode(data_url(Image.new("RGB", (64, 40)), max_side=256)).size == (64, 40)
    noisy = Image.effect_noise((2048, 2048), 80).convert("RGB")
    assert len(data_url(noisy, max_side=256)) < 40_000


def test_leaving_a_preview_out_restores_the_plain_event() -> None:
    plain = {"type": "status", "message": "Denoising step 1 of 4", "progress": 26}
    with_preview = {**plain, "data": {"previewImage": "data:image/jpeg;base64,AAAA"}}
    assert without_preview(with_preview) == plain
    assert list(without_preview(with_preview)) == ["type", "message", "progress"]
    assert without_preview(plain) is plain
    final = {"type": "complete", "message": "m", "progress": 100, "data": {"success": True}}
    assert without_preview(final) is final
