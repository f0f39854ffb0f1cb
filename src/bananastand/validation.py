"""A generation request as it arrives, and its validation against the contract,
the settings and the model catalogue (`prepare`), before anything is charged."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any

from bananastand.catalog import Catalog, ModelSpec
from bananastand.config import Settings
from bananastand.errors import InvalidRequest, ProRequired

MODES = ("sync", "stream", "async")


@dataclass(frozen=True)
class GenerateParams:
    """A generation request as it arrives, before validation (see `prepare`)."""

    prompt: Any
    selected_model: str | None = None
    reference_image_urls: list[str] | None = None
    aspect_ratio: str | None = None
    quantity: float | int | None = None
    mode: str | None = None
    seed: int | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class Prepared:
    model: ModelSpec
    prompt: str
    mode: str
    aspect_ratio: str
    quantity: int
    reference_urls: list[str]
    seed: int
    callback_url: str | None = None


def prepare(
    params: GenerateParams, *, settings: Settings, catalog: Catalog, is_pro: bool
) -> Prepared:
    """Validate a request against the contract and the model's capabilities."""
    if not isinstance(params.prompt, str) or not params.prompt.strip():
        raise InvalidRequest("prompt is required and must be a non-empty string")
    prompt = params.prompt.strip()
    if "\x00" in prompt:
        raise InvalidRequest("prompt must not contain NUL characters")
    if len(prompt) > settings.max_prompt_length:
        raise InvalidRequest(
            f"prompt is too long: {len(prompt)} characters, "
            f"the limit is {settings.max_prompt_length}"
        )
    mode = params.mode if params.mode is not None else "sync"
    if mode not in MODES:
        raise InvalidRequest(f"mode must be one of sync, stream, async (got {mode!r})")
    model = catalog.get((params.selected_model or "").strip() or settings.default_model)
    if model.requires_pro and not is_pro:
        raise ProRequired(f"The model {model.name!r} requires a Pro account")
    references = list(params.reference_image_urls or [])
    if references and not model.supports_image_input:
        raise InvalidRequest(
            f"The model {model.name!r} does not accept reference images (image-to-image)"
        )
    limit = min(model.max_reference_images, settings.reference_max_count)
    if len(references) > limit:
        raise InvalidRequest(
            f"Too many reference images: {len(references)}; {model.name!r} accepts at most {limit}"
        )
    ratio = (params.aspect_ratio or "default").strip()
    if ratio != "default" and not model.supports_aspect_ratio:
        raise InvalidRequest(
            f'The model {model.name!r} does not support aspectRatio; omit it or use "default"'
        )
    if ratio != "default" and ratio not in model.aspect_ratios:
        raise InvalidRequest(
            f"aspectRatio {ratio!r} is not supported by {model.name!r}; "
            f'use "default" or one of: {", ".join(model.aspect_ratios)}'
        )
    quantity = clamp_quantity(params.quantity, min(model.max_quantity, settings.max_quantity))
    if model.streaming:
        quantity = 1
    seed = params.seed if params.seed is not None else secrets.randbelow(2**31)
    callback = params.callback_url
    if callback is not None and not isinstance(callback, str):
        raise InvalidRequest("callbackUrl must be a URL string")
    return Prepared(
        model,
        prompt,
        mode,
        ratio,
        quantity,
        references,
        seed % 2**31,
        (callback or "").strip() or None,  # "" means none
    )


def clamp_quantity(value: float | int | None, maximum: int) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest("quantity must be a number")
    if isinstance(value, float) and math.isnan(value):
        raise InvalidRequest("quantity must be a number")
    if value >= maximum:  # also +Infinity (JSON 1e400): truncated, as the contract says
        return maximum
    return max(math.trunc(value), 1) if value >= 1 else 1


def check_idempotency_key(key: str) -> str:
    key = key.strip()
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable characters")
    return key


def request_hash(params: GenerateParams) -> str:
    """The request as sent, canonically: the same body gives the same hash."""
    canonical = json.dumps(dataclasses.asdict(params), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def summarise_reference(url: str) -> str:
    """What the record keeps of a reference URL: data URLs are not stored whole."""
    if url.startswith("data:"):
        return url.split(",", 1)[0] + ",…"
    return url
