"""Local diffusion models (diffusers): the parts that need no torch —
catalogue options, references fitted to the output, locating weights. Imported both by
`diffusers_backend` (the registration, which must stay cheap) and by
`diffusers_provider` (the provider itself, which imports torch).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from bananastand.providers.base import ReferenceImage

DOWNLOAD_HINT = "set BANANASTAND_DIFFUSERS_ALLOW_DOWNLOAD=true to fetch"
NOT_FOUND = (
    f"weights not found locally (neither a local folder nor in the hub cache; {DOWNLOAD_HINT})"
)
TEXT_TO_IMAGE = "text-to-image"
IMAGE_TO_IMAGE = "image-to-image"


# --- recipes and sizes ------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """A catalogue entry's `options`, checked. Defaults are SD-Turbo's recipes."""

    base_size: int = 512
    steps: int = 1
    guidance_scale: float = 0.0
    image_to_image_steps: int = 2
    strength: float = 0.5

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Recipe:
        """Raises ValueError naming the bad option."""
        recipe = cls(
            base_size=_int_option(options, "baseSize", cls.base_size, 64, 4096),
            steps=_int_option(options, "steps", cls.steps, 1, 500),
            guidance_scale=_float_option(options, "guidanceScale", cls.guidance_scale, 0.0, 50.0),
            image_to_image_steps=_int_option(
                options, "imageToImageSteps", cls.image_to_image_steps, 1, 500
            ),
            strength=_float_option(options, "strength", cls.strength, 0.01, 1.0),
        )
        return recipe

    @property
    def image_to_image_steps_effective(self) -> int:
        """Nominal img2img steps, raised so that `int(steps * strength)` is at least 1."""
        return max(self.image_to_image_steps, math.ceil(1 / self.strength - 1e-9))


def _int_option(options: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"option {name} must be an integer in {low}..{high}")
    return value


def _float_option(
    options: dict[str, Any], name: str, default: float, low: float, high: float
) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"option {name} must be a number in {low:g}..{high:g}")
    if not low <= float(value) <= high:
        raise ValueError(f"option {name} must be a number in {low:g}..{high:g}")
    return float(value)


def fit_reference(reference: ReferenceImage, width: int, height: int) -> Image.Image:
    """The reference as RGB, centre-cropped to the output's shape and resized to it."""
    with reference.open() as opened:
        upright = ImageOps.exif_transpose(opened) or opened
        rgb = upright.convert("RGB")
    return ImageOps.fit(rgb, (width, height), method=Image.Resampling.LANCZOS)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# --- locating and loading weights ----------------------------------------------------
def _looks_like_path(model_id: str) -> bool:
    return (
        model_id.startswith(("/", ".", "~"))
        or "\\" in model_id
        or model_id.count("/") > 1
        or Path(model_id).is_absolute()
    )


def _in_hub_cache(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "model_index.json")
    except Exception:  # an invalid repo id, an unreadable cache: not there
        return False
    return isinstance(found, str)


def locate(model_id: str, *, allow_download: bool) -> str | None:
    """Why `model_id`'s weights cannot be loaded here, or None. Cheap: no network."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return None
        return "the weights folder is not a diffusers pipeline (no model_index.json)"
    if _looks_like_path(model_id):
        return "weights not found locally (no such folder)"
    if allow_download or _in_hub_cache(model_id):
        return None
    return NOT_FOUND
