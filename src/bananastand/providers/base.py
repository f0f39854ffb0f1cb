"""The one small protocol every image backend implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image


@dataclass(frozen=True)
class ReferenceImage:
    """A fetched, validated reference image."""

    data: bytes  # the original bytes, as fetched
    mime_type: str  # e.g. "image/png"
    width: int
    height: int

    def open(self) -> Image.Image:
        import io

        return Image.open(io.BytesIO(self.data))


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    backend_model: str
    quantity: int
    seed: int
    aspect_ratio: str | None = None  # None: the backend's default
    references: tuple[ReferenceImage, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    mime_type: str = "image/png"


@dataclass(frozen=True)
class ProviderResult:
    images: list[GeneratedImage]
    # Set when the backend refused on safety grounds: the contract's `warning` answer.
    safety_message: str | None = None
    # Per-image failures when fewer images than asked were produced.
    errors: list[str] = field(default_factory=list)


# progress(fraction in 0..1, human message)
Progress = Callable[[float, str], Awaitable[None]]


class ProviderError(Exception):
    """A backend failed; the message is safe to show to the client."""


class Provider(Protocol):
    name: str

    async def generate(self, request: ImageRequest, progress: Progress) -> ProviderResult: ...

    async def aclose(self) -> None: ...
