"""Constants, result types and parsing shared by the sync and async clients."""

from __future__ import annotations

import json
import mimetypes
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
TERMINAL_STATUSES = frozenset({"completed", "failed"})
RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_DELAY = 60.0
_STREAM_CUT = "the stream ended before the generation finished"


# --- results -----------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    display_name: str
    credits_cost: int
    supports_image_input: bool
    supports_aspect_ratio: bool
    requires_pro: bool
    backend: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return cls(
            name=data["name"],
            display_name=data.get("displayName", data["name"]),
            credits_cost=int(data.get("creditsCost", 0)),
            supports_image_input=bool(data.get("supportsImageInput", False)),
            supports_aspect_ratio=bool(data.get("supportsAspectRatio", False)),
            requires_pro=bool(data.get("requiresPro", False)),
            backend=data.get("backend"),
        )


@dataclass(frozen=True)
class Generation:
    """The answer to `generate()`: a finished sync result, or an accepted async one."""

    generation_id: str
    success: bool
    image_urls: tuple[str, ...] = ()
    credits_used: int | None = None
    remaining_credits: int | None = None
    warning: bool = False
    message: str | None = None
    is_async: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Generation:
        return cls(
            generation_id=data["generationId"],
            success=bool(data.get("success", False)),
            image_urls=tuple(data.get("imageUrls") or ()),
            credits_used=data.get("creditsUsed"),
            remaining_credits=data.get("remainingCredits"),
            warning=bool(data.get("warning", False)),
            message=data.get("message"),
            is_async=bool(data.get("async", False)),
        )


@dataclass(frozen=True)
class StreamEventData:
    success: bool
    generation_id: str | None = None
    image_urls: tuple[str, ...] = ()
    error: str | None = None
    credits_used: int | None = None
    remaining_credits: int | None = None
    preview_image: str | None = None  # extension: a data URL on some status events

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamEventData:
        return cls(
            success=bool(data.get("success", False)),
            generation_id=data.get("generationId"),
            image_urls=tuple(data.get("imageUrls") or ()),
            error=data.get("error"),
            credits_used=data.get("creditsUsed"),
            remaining_credits=data.get("remainingCredits"),
            preview_image=data.get("previewImage"),
        )


@dataclass(frozen=True)
class StreamEvent:
    type: str  # "status" | "complete" | "error"
    message: str
    progress: int
    data: StreamEventData | None = None
    id: int | None = None  # the event's number: `resume(…, last_event_id=id)` continues after it

    @property
    def is_final(self) -> bool:
        return self.type in ("complete", "error")

    @classmethod
    def from_json(cls, data: dict[str, Any], *, id: int | None = None) -> StreamEvent:
        inner = data.get("data")
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            progress=int(data.get("progress", 0)),
            data=StreamEventData.from_json(inner) if isinstance(inner, dict) else None,
            id=id,
        )


@dataclass(frozen=True)
class GenerationRecord:
    id: str
    prompt: str
    output_image_urls: tuple[str, ...]
    model_used: str
    processing_status: str  # "processing" | "completed" | "failed"
    credits_used: int
    created_at: str
    error_message: str | None = None
    mode: str | None = None
    quantity: int | None = None
    aspect_ratio: str | None = None
    reference_image_count: int = 0
    warning: bool = False
    message: str | None = None  # the safety warning's text, with `warning`

    @property
    def generation_id(self) -> str:
        return self.id

    @property
    def is_terminal(self) -> bool:
        return self.processing_status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationRecord:
        return cls(
            id=data["id"],
            prompt=data.get("prompt", ""),
            output_image_urls=tuple(data.get("outputImageUrls") or ()),
            model_used=data.get("modelUsed", ""),
            processing_status=data.get("processingStatus", ""),
            credits_used=int(data.get("creditsUsed", 0)),
            created_at=data.get("createdAt", ""),
            error_message=data.get("errorMessage"),
            mode=data.get("mode"),
            quantity=data.get("quantity"),
            aspect_ratio=data.get("aspectRatio"),
            reference_image_count=int(data.get("referenceImageCount", 0)),
            warning=bool(data.get("warning", False)),
            message=data.get("message"),
        )


@dataclass(frozen=True)
class GenerationPage:
    """One page of `list_generations()`, newest first; `next_before` asks for the
    next page (None on the last)."""

    records: tuple[GenerationRecord, ...]
    next_before: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationPage:
        return cls(
            records=tuple(GenerationRecord.from_json(item) for item in data.get("data") or ()),
            next_before=data.get("nextBefore"),
        )


@dataclass(frozen=True)
class Cancellation:
    """The answer to `cancel()`: whether it stopped the generation, and its record."""

    cancelled: bool
    message: str
    record: GenerationRecord

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cancellation:
        return cls(
            cancelled=bool(data.get("success", False)),
            message=str(data.get("message", "")),
            record=GenerationRecord.from_json(data["data"]),
        )


Downloadable = Generation | GenerationRecord | StreamEvent | StreamEventData | Sequence[str]


# --- shared helpers ----------------------------------------------------------------


def parse_sse_line(line: str) -> StreamEvent | None:
    """One line of the stream: an event for a `data: ` line, else None.

    Comments (`:` keep-alives), blank lines and other fields are ignored."""
    line = line.rstrip("\r\n")
    if not line.startswith("data: "):
        return None
    payload = json.loads(line[len("data: ") :])
    if not isinstance(payload, dict):
        return None
    return StreamEvent.from_json(payload)


class _EventReader:
    """Events from a stream's lines, with the number of each from its `id:` line."""

    def __init__(self) -> None:
        self._id: int | None = None
        self.last_id: int | None = None

    def feed(self, line: str) -> StreamEvent | None:
        line = line.rstrip("\r\n")
        if line.startswith("id:"):
            value = line[3:].strip()
            self._id = int(value) if value.isascii() and value.isdigit() else None
            return None
        event = parse_sse_line(line)
        if event is not None:
            if self._id is not None:
                event = replace(event, id=self._id)
                self.last_id = self._id
            self._id = None
        elif not line:
            self._id = None
        return event


def image_filename(generation_id: str, index: int, url: str) -> str:
    """`{generationId}_{i}{ext}`, the extension taken from the URL's path."""
    ext = posixpath.splitext(urlsplit(url).path)[1].lower()
    if not ext or len(ext) > 6 or not ext[1:].isalnum():
        ext = ".png"
    return f"{generation_id}_{index}{ext}"


def _download_targets(source: Downloadable, generation_id: str | None) -> tuple[str, list[str]]:
    if isinstance(source, Generation | StreamEventData):
        return generation_id or source.generation_id or "image", list(source.image_urls)
    if isinstance(source, GenerationRecord):
        return generation_id or source.id, list(source.output_image_urls)
    if isinstance(source, StreamEvent):
        if source.data is None:
            raise ValueError("this stream event carries no images")
        return _download_targets(source.data, generation_id)
    if isinstance(source, str):
        source = [source]
    urls = list(source)
    if generation_id is None:
        # A bare list of URLs: name the files after the first URL's file name.
        stem = posixpath.splitext(posixpath.basename(urlsplit(urls[0]).path))[0] if urls else ""
        generation_id = stem or "image"
    return generation_id, urls


def _generate_body(
    prompt: str,
    *,
    model: str | None,
    aspect_ratio: str | None,
    quantity: int | None,
    reference_image_urls: Iterable[str] | None,
    mode: str,
    seed: int | None,
    callback_url: str | None = None,
    previews: bool | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt, "mode": mode}
    if model is not None:
        body["selectedModel"] = model
    if aspect_ratio is not None:
        body["aspectRatio"] = aspect_ratio
    if quantity is not None:
        body["quantity"] = quantity
    refs = list(reference_image_urls or ())
    if refs:
        body["referenceImageUrls"] = refs
    if seed is not None:
        body["seed"] = seed
    if callback_url is not None:
        body["callbackUrl"] = callback_url  # a webhook when it ends (extension)
    if previews is not None:
        body["previews"] = previews  # stream previews (extension); the server's default: on
    return body


def file_to_data_url(path: str | Path) -> str:
    """A local image as a `data:image/...;base64,` URL (for `referenceImageUrls`)."""
    import base64

    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
