"""The one small protocol every image backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

#: What a client is told when a backend refuses on safety grounds (the contract's
#: `warning` answer), whichever backend refused.
SAFETY_MESSAGE = "Content safety check failed"


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
class Previews:
    """Asked of a backend when someone watches the generation live (stream mode): it
    may attach a picture of the work in progress to some progress reports."""

    every_steps: int = 2  # step-wise backends: a preview every this many steps


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    backend_model: str  # the catalogue's `backendModel`
    quantity: int  # images wanted; a backend may produce fewer (the rest is refunded)
    seed: int
    aspect_ratio: str | None = None  # None: the backend's default
    references: tuple[ReferenceImage, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)  # the catalogue entry's `options`
    # time.monotonic() by which the whole generation must end (retries included);
    # the caller also enforces it with a timeout.
    deadline: float | None = None
    # None: send no previews (pass `preview=` to `progress` only when this is set).
    previews: Previews | None = None
    model: str = ""  # the catalogue name the client asked for (for messages)


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


class Progress(Protocol):
    """`progress(fraction in 0..1, human message)`; with `request.previews` set, also
    `preview=` an image of the work so far (any size: the caller shrinks it).
    A backend making several images may report each as it is done, `image=` (the
    same object it later returns in `ProviderResult.images`): it is stored at once
    and shown to a watching console before the run ends."""

    def __call__(
        self,
        fraction: float,
        message: str,
        /,
        *,
        preview: Image.Image | None = None,
        image: GeneratedImage | None = None,
    ) -> Awaitable[None]: ...


class ProviderError(Exception):
    """A backend failed; the message is safe to show to the client."""


class Provider(Protocol):
    """An image backend. Built once at start by its factory (see `providers`)."""

    name: str

    def unavailable(self, backend_model: str) -> str | None:
        """Why this backend cannot serve `backend_model` here, or None if it can."""
        ...

    async def start(self) -> None:
        """Load what must be warm before serving (weights, clients)."""
        ...

    async def generate(self, request: ImageRequest, progress: Progress) -> ProviderResult:
        """Make up to `request.quantity` images. Raise `ProviderError` (with a message
        safe to show clients) when none can be made; return fewer images with `errors`
        for a partial result; set `safety_message` for a safety verdict."""
        ...

    async def aclose(self) -> None: ...


class BaseProvider(ABC):
    """What most backends share: every model served (`unavailable` is None), nothing
    to warm up at `start`, nothing to release at `aclose`. A subclass sets `name`,
    writes `generate`, and overrides the others only when it has something to do."""

    name: str

    def unavailable(self, backend_model: str) -> str | None:
        return None

    async def start(self) -> None:
        return None

    @abstractmethod
    async def generate(self, request: ImageRequest, progress: Progress) -> ProviderResult: ...

    async def aclose(self) -> None:
        return None
