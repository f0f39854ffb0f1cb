"""Tests for the built-in offline renderer (bananastand.render)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from bananastand.render import SIZES, encode, render, size_for_ratio

EXPECTED_SIZES = {
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


def _ratio_error(size: tuple[int, int], ratio: str) -> float:
    rw, rh = (int(t) for t in ratio.split(":"))
    return abs((size[0] / size[1]) / (rw / rh) - 1.0)


def _arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(_arr(a) - _arr(b)).mean())


def _gray_small(image: Image.Image, size: int = 64) -> np.ndarray:
    return np.asarray(image.convert("L").resize((size, size), Image.Resampling.BOX), np.float32)


def _gray_mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(_gray_small(a) - _gray_small(b)).mean())


def _structured_reference(width: int = 600, height: int = 400) -> Image.Image:
    """A photo stand-in with strong structure: checkerboard, a disc and a bar."""
    img = Image.new("RGB", (width, height), (225, 230, 240))
    draw = ImageDraw.Draw(img)
    cell = 50
    for x in range(0, width, cell):
        for y in range(0, height, cell):
            if (x // cell + y // cell) % 2:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(30, 45, 70))
    draw.ellipse((width * 0.3, height * 0.2, width * 0.7, height * 0.8), fill=(230, 90, 40))
    draw.rectangle((0, height * 0.85, width, height), fill=(250, 250, 120))
    return img


# --------------------------------------------------------------------------------------------
# size_for_ratio
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ratio", "expected"), sorted(EXPECTED_SIZES.items()))
def test_size_table(ratio: str, expected: tuple[int, int]) -> None:
    assert size_for_ratio(ratio) == expected
    assert SIZES[ratio] == expected


def test_size_none_is_square() -> None:
    assert size_for_ratio(None) == (1024, 1024)


@pytest.mark.parametrize(
    ("ratio", "expected"), [("2:2", "1:1"), (" 16 : 9 ", "16:9"), ("6:8", "3:4"), ("14:6", "21:9")]
)
def test_size_reduces_and_strips(ratio: str, expected: str) -> None:
    assert size_for_ratio(ratio) == EXPECTED_SIZES[expected]


@pytest.mark.parametrize("ratio", sorted(EXPECTED_SIZES))
def test_table_sizes_close_to_ratio(ratio: str) -> None:
    # The output really has the requested ratio: exactly, for the ten standard ones.
    assert _ratio_error(size_for_ratio(ratio), ratio) < 1e-9


def test_generic_sizes_close_to_ratio_and_area() -> None:
    for rw in range(1, 22):
        for rh in range(1, 22):
            ratio = f"{rw}:{rh}"
            w, h = size_for_ratio(ratio)
            assert w % 16 == 0 and h % 16 == 0, ratio
            if (w, h) in EXPECTED_SIZES.values():  # a table ratio, e.g. "6:8" -> "3:4"
                continue
            assert _ratio_error((w, h), ratio) < 0.02, (ratio, w, h)
            assert 0.85 <= w * h / 1024**2 <= 1.15, (ratio, w, h)


@pytest.mark.parametrize(
    "ratio", ["", "abc", "16x9", "16:", ":9", "0:1", "1:0", "22:9", "9:22", "-1:2", "1.5:1"]
)
def test_size_rejects_garbage(ratio: str) -> None:
    with pytest.raises(ValueError):
        size_for_ratio(ratio)


def test_size_rejects_non_string() -> None:
    with pytest.raises(ValueError):
        size_for_ratio(169)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Text-to-image
# --------------------------------------------------------------------------------------------


def test_deterministic_bytes() -> None:
    a = render("an orange cat on a sofa", seed=42, width=1024, height=1024)
    b = render("an orange cat on a sofa", seed=42, width=1024, height=1024)
    assert a.tobytes() == b.tobytes()


def test_deterministic_across_processes() -> None:
    """Randomness must not come from the per-process salted hash()."""
    code = (
        "import hashlib; from bananastand.render import render; "
        "im = render('a red car at dusk', seed=7, width=96, height=80); "
        "print(hashlib.sha256(im.tobytes()).hexdigest())"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    local = render("a red car at dusk", seed=7, width=96, height=80)
    assert digests == {hashlib.sha256(local.tobytes()).hexdigest()}


@pytest.mark.parametrize(
    ("a", "b"),
    [("a cat", "a dog"), ("orange cat", "blue ocean"), ("x", "y"), ("mountains", "a red car")],
)
def test_different_prompts_differ(a: str, b: str) -> None:
    img_a = render(a, seed=1, width=256, height=256)
    img_b = render(b, seed=1, width=256, height=256)
    assert _mad(img_a, img_b) > 15.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 123456789, -5])
def test_different_seeds_differ(seed: int) -> None:
    img_a = render("a quiet lake", seed=seed, width=256, height=256)
    img_b = render("a quiet lake", seed=seed + 1, width=256, height=256)
    assert _mad(img_a, img_b) > 12.0


@pytest.mark.parametrize("size", [(1024, 1024), (1344, 768), (768, 1344), (17, 9), (1, 1)])
def test_size_and_mode(size: tuple[int, int]) -> None:
    img = render("anything", seed=3, width=size[0], height=size[1])
    assert img.size == size
    assert img.mode == "RGB"


def test_not_flat() -> None:
    arr = _arr(render("a garden", seed=9, width=256, height=256))
    assert arr.std(axis=(0, 1)).max() > 10.0


def test_colour_words_steer_palette() -> None:
    for seed in range(6):
        orange = _arr(render("an orange cat", seed=seed, width=96, height=96)).mean(axis=(0, 1))
        blue = _arr(render("a blue ocean", seed=seed, width=96, height=96)).mean(axis=(0, 1))
        assert orange[0] - orange[2] > 30.0, (seed, orange)
        assert blue[2] - blue[0] > 30.0, (seed, blue)


def test_caption_only_touches_the_bottom() -> None:
    with_caption = _arr(render("a long prompt " * 20, seed=4, width=512, height=512))
    without = _arr(render("a long prompt " * 20, seed=4, width=512, height=512, caption=False))
    assert np.array_equal(with_caption[:400], without[:400])
    assert not np.array_equal(with_caption, without)


def test_unicode_prompt() -> None:
    img = render("猫 🐱 \udcff orange", seed=1, width=200, height=200)
    assert img.size == (200, 200)


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 0, "height": 10}, {"width": 10, "height": -1}, {"width": 10**5, "height": 10}],
)
def test_bad_size_raises(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        render("x", seed=0, **kwargs)


def test_bad_steps_raises() -> None:
    with pytest.raises(ValueError):
        render("x", seed=0, width=10, height=10, steps=0)


# --------------------------------------------------------------------------------------------
# Image-to-image
# --------------------------------------------------------------------------------------------


def test_img2img_derived_from_reference() -> None:
    ref = _structured_reference()
    size = (512, 512)
    fitted = ImageOps.fit(ref, size)
    for seed in range(4):
        out = render("an orange cat", seed=seed, width=size[0], height=size[1], references=[ref])
        text_only = render("an orange cat", seed=seed, width=size[0], height=size[1])
        near, far = _gray_mad(out, fitted), _gray_mad(out, text_only)
        assert near < 0.4 * far, (seed, near, far)
        corr = np.corrcoef(_gray_small(out).ravel(), _gray_small(fitted).ravel())[0, 1]
        assert corr > 0.85, (seed, corr)


def test_img2img_is_stylised_and_deterministic() -> None:
    ref = _structured_reference()
    a = render("neon city", seed=1, width=320, height=240, references=[ref])
    b = render("neon city", seed=1, width=320, height=240, references=[ref])
    c = render("neon city", seed=2, width=320, height=240, references=[ref])
    assert a.tobytes() == b.tobytes()
    assert _mad(a, c) > 3.0
    assert _mad(a, ImageOps.fit(ref, (320, 240))) > 3.0  # not just a resize


def test_img2img_follows_the_reference() -> None:
    ref = _structured_reference()
    other = ImageOps.invert(ref)
    a = render("p", seed=1, width=256, height=256, references=[ref])
    b = render("p", seed=1, width=256, height=256, references=[other])
    assert _gray_mad(a, b) > 40.0


def test_img2img_does_not_modify_reference() -> None:
    ref = _structured_reference()
    before = ref.tobytes()
    render("p", seed=1, width=600, height=400, references=[ref])
    assert ref.tobytes() == before


def _as_mode(ref: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        gray = np.asarray(ref.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(gray)
    if mode == "P":
        return ref.quantize(64)
    if mode == "RGBA":
        rgba = ref.convert("RGBA")
        rgba.putalpha(255)
        return rgba
    return ref.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "CMYK", "I;16", "1", "LA"])
def test_img2img_reference_modes(mode: str) -> None:
    base = _structured_reference()
    ref = _as_mode(base, mode)
    assert ref.mode == mode
    size = (256, 256)
    out = render("a painting", seed=5, width=size[0], height=size[1], references=[ref])
    assert out.mode == "RGB" and out.size == size
    expected = ImageOps.fit(
        base.convert("L").convert("RGB") if mode in ("L", "I;16") else base, size
    )
    text_only = render("a painting", seed=5, width=size[0], height=size[1])
    assert _gray_mad(out, expected) < 0.5 * _gray_mad(out, text_only)


def test_img2img_transparent_reference() -> None:
    ref = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    ImageDraw.Draw(ref).ellipse((50, 50, 250, 250), fill=(20, 20, 20, 255))
    out = _gray_small(render("p", seed=0, width=128, height=128, references=[ref]))
    # transparent corners are flattened onto a light background, the disc stays dark
    assert out[2, 2] - out[32, 32] > 80.0


def test_img2img_exif_orientation() -> None:
    ref = Image.new("RGB", (200, 100), (240, 240, 240))
    ImageDraw.Draw(ref).rectangle((0, 0, 99, 99), fill=(10, 10, 10))  # dark left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed -> dark part ends up on top
    ref.info["exif"] = exif.tobytes()
    buf = io.BytesIO()
    ref.save(buf, "JPEG", exif=exif.tobytes())
    loaded = Image.open(io.BytesIO(buf.getvalue()))
    out = _gray_small(render("p", seed=0, width=100, height=200, references=[loaded]))
    assert out[:32].mean() + 80.0 < out[32:].mean()


def test_img2img_several_references() -> None:
    refs = [
        Image.new("RGB", (300, 300), (10, 10, 10)),
        _structured_reference(),
        Image.new("RGB", (500, 200), (245, 245, 245)),
    ]
    for seed in range(4):
        out = _gray_small(render("p", seed=seed, width=384, height=384, references=refs))
        # panels run left->right or top->bottom: the top-left corner shows the first reference,
        # the bottom-right corner the last one
        assert out[:8, :8].mean() < 90.0, seed
        assert out[-8:, -8:].mean() > 160.0, seed
        single = _gray_small(render("p", seed=seed, width=384, height=384, references=refs[:1]))
        assert np.abs(out - single).mean() > 30.0


def test_img16_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.float64), (64, 1)).astype(np.uint16)
    ref = Image.fromarray(ramp)
    assert ref.mode == "I;16"
    out = _gray_small(render("p", seed=0, width=256, height=64, references=[ref], caption=False))
    assert out[:, :8].mean() < 100.0  # clipping would make everything white


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 4, 7, 50])
@pytest.mark.parametrize("with_refs", [False, True])
def test_on_step(steps: int, with_refs: bool) -> None:
    calls: list[tuple[int, int]] = []
    refs = [_structured_reference()] if with_refs else []
    img = render(
        "p",
        seed=1,
        width=128,
        height=96,
        references=refs,
        steps=steps,
        on_step=lambda i, n: calls.append((i, n)),
    )
    assert calls == [(i, steps) for i in range(1, steps + 1)]
    same = render("p", seed=1, width=128, height=96, references=refs, steps=3)
    assert img.tobytes() == same.tobytes()  # steps never changes the picture


def test_on_step_exception_aborts() -> None:
    calls: list[int] = []

    def cancel(i: int, n: int) -> None:
        calls.append(i)
        if i == 2:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        render("p", seed=1, width=64, height=64, steps=5, on_step=cancel)
    assert calls == [1, 2]


# --------------------------------------------------------------------------------------------
# encode
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "pil_format"),
    [
        ("png", "PNG"),
        ("PNG", "PNG"),
        ("image/png", "PNG"),
        ("jpeg", "JPEG"),
        ("jpg", "JPEG"),
        ("webp", "WEBP"),
        ("image/webp", "WEBP"),
    ],
)
def test_encode_roundtrip(fmt: str, pil_format: str) -> None:
    img = render("a harbour", seed=2, width=320, height=200)
    data = encode(img, fmt)
    assert isinstance(data, bytes)
    with Image.open(io.BytesIO(data)) as back:
        assert back.format == pil_format
        assert back.size == (320, 200)
        back_rgb = back.convert("RGB")
    if pil_format == "PNG":
        assert back_rgb.tobytes() == img.tobytes()
    else:
        assert _mad(back_rgb, img) < 4.0


def test_encode_default_is_png() -> None:
    assert encode(render("p", seed=0, width=32, height=32)).startswith(b"\x89PNG\r\n\x1a\n")


def test_encode_rgba_as_jpeg() -> None:
    data = encode(Image.new("RGBA", (40, 30), (10, 200, 30, 128)), "jpeg")
    with Image.open(io.BytesIO(data)) as back:
        assert back.format == "JPEG" and back.mode == "RGB" and back.size == (40, 30)


@pytest.mark.parametrize("fmt", ["gif", "bmp", "", "png2"])
def test_encode_rejects_unknown_format(fmt: str) -> None:
    with pytest.raises(ValueError):
        encode(Image.new("RGB", (4, 4)), fmt)


def test_thread_safe_and_deterministic_in_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(f"prompt {i}", i) for i in range(8)]

    def one(job: tuple[str, int]) -> bytes:
        return render(job[0], seed=job[1], width=192, height=128).tobytes()

    serial = [one(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(one, jobs)) == serial
