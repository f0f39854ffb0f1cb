"""A small Python client for the Nano Banana API (as served by Bananastand).

    from bananastand.client import Client

    with Client("http://127.0.0.1:8000", "nb_…") as nb:
        result = nb.generate("A cute orange cat sitting on a windowsill")
        paths = nb.download(result, "out/")

`AsyncClient` has the same methods as coroutines (`stream` is an async
iterator). Results are frozen dataclasses with snake_case attributes; failures
raise `BananastandAPIError` subclasses chosen by the body's `type`. 429 and 503
answers are retried after their `Retry-After`, at most `max_retries` times.
The API key is sent only in the Authorization header: it never appears in a
repr, an exception or a log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import mimetypes
import posixpath
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

__all__ = [
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BananastandAPIError",
    "BananastandClientError",
    "Client",
    "Generation",
    "GenerationFailedError",
    "GenerationRecord",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidRequestError",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerBusyError",
    "StreamEvent",
    "StreamEventData",
    "WaitTimeoutError",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
TERMINAL_STATUSES = frozenset({"completed", "failed"})
RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_DELAY = 60.0
_STREAM_CUT = "the stream ended before the generation finished"

Mode = Literal["sync", "stream", "async"]


# --- errors ------------------------------------------------------------------------


class BananastandClientError(Exception):
    """Base of every error this module raises."""


class APIConnectionError(BananastandClientError):
    """The server could not be reached, or the connection broke."""


class WaitTimeoutError(BananastandClientError, TimeoutError):
    """`wait()` gave up before the generation reached a terminal state."""

    def __init__(self, generation_id: str, timeout: float) -> None:
        super().__init__(f"generation {generation_id} still processing after {timeout:g}s")
        self.generation_id = generation_id
        self.timeout = timeout


class BananastandAPIError(BananastandClientError):
    """The server answered with an error status (or an error body)."""

    def __init__(
        self, status: int, type: str | None, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.body = body or {}

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, type={self.type!r}, {self.message!r})"


class InvalidRequestError(BananastandAPIError):
    """400: invalid parameters."""


class AuthenticationError(BananastandAPIError):
    """401: missing, unknown or revoked API key."""


class InsufficientCreditsError(BananastandAPIError):
    """402: the balance does not cover the generation."""


class PermissionDeniedError(BananastandAPIError):
    """403: API access not enabled (or the model needs a Pro account)."""


class NotFoundError(BananastandAPIError):
    """404: unknown generation id (or another account's)."""


class RateLimitError(BananastandAPIError):
    """429: the account's concurrency limit is reached."""

    def __init__(
        self, status: int, type: str | None, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, type, message, body)
        self.limit: int | None = _int_or_none(self.body.get("limit"))
        self.active: int | None = _int_or_none(self.body.get("active"))
        self.retry_after: float | None = None


class GenerationFailedError(BananastandAPIError):
    """502: the generation failed; its credits were refunded."""

    def __init__(
        self, status: int, type: str | None, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, type, message, body)
        self.generation_id: str | None = self.body.get("generationId")


class ServerBusyError(BananastandAPIError):
    """503: the async queue is full."""

    def __init__(
        self, status: int, type: str | None, message: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, type, message, body)
        self.retry_after: float | None = None


class InternalServerError(BananastandAPIError):
    """500 (or another 5xx): the server failed."""


_BY_TYPE: dict[str, type[BananastandAPIError]] = {
    "invalid_request": InvalidRequestError,
    "model_unavailable": InvalidRequestError,
    "unauthorized": AuthenticationError,
    "insufficient_credits": InsufficientCreditsError,
    "forbidden": PermissionDeniedError,
    "api_access_disabled": PermissionDeniedError,
    "pro_required": PermissionDeniedError,
    "not_found": NotFoundError,
    "concurrency_limit": RateLimitError,
    "generation_failed": GenerationFailedError,
    "server_busy": ServerBusyError,
    "internal_error": InternalServerError,
}
_BY_STATUS: dict[int, type[BananastandAPIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
    500: InternalServerError,
    502: GenerationFailedError,
    503: ServerBusyError,
}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_from_response(status: int, content: bytes, headers: httpx.Headers) -> BananastandAPIError:
    """The exception for an error answer: by the body's `type`, else by status."""
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    kind = body.get("type") if isinstance(body.get("type"), str) else None
    message = body.get("error") or body.get("message")
    if not isinstance(message, str) or not message:
        message = f"HTTP {status}"
    cls = _BY_TYPE.get(kind or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else BananastandAPIError
    error = cls(status, kind, message, body)
    if isinstance(error, RateLimitError | ServerBusyError):
        error.retry_after = parse_retry_after(headers.get("Retry-After"))
    return error


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamEventData:
        return cls(
            success=bool(data.get("success", False)),
            generation_id=data.get("generationId"),
            image_urls=tuple(data.get("imageUrls") or ()),
            error=data.get("error"),
            credits_used=data.get("creditsUsed"),
            remaining_credits=data.get("remainingCredits"),
        )


@dataclass(frozen=True)
class StreamEvent:
    type: str  # "status" | "complete" | "error"
    message: str
    progress: int
    data: StreamEventData | None = None

    @property
    def is_final(self) -> bool:
        return self.type in ("complete", "error")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamEvent:
        inner = data.get("data")
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            progress=int(data.get("progress", 0)),
            data=StreamEventData.from_json(inner) if isinstance(inner, dict) else None,
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
    return body


def file_to_data_url(path: str | Path) -> str:
    """A local image as a `data:image/...;base64,` URL (for `referenceImageUrls`)."""
    import base64

    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


class _Base:
    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
    ) -> None:
        base = base_url.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        self.base_url = base
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "bananastand-client"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _url(self, path: str) -> str:
        return f"{API_PREFIX}{path}"

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying this answer, or None to not retry."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        delay = parse_retry_after(response.headers.get("Retry-After"))
        if delay is None:
            delay = min(2.0**attempt, MAX_RETRY_DELAY)
        return min(delay, MAX_RETRY_DELAY)

    def _next_poll(self, interval: float) -> float:
        return min(interval * 2, self.max_poll_interval)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content, response.headers)


def _json(response: httpx.Response) -> Any:
    _raise_for(response)
    try:
        return response.json()
    except ValueError:
        raise BananastandAPIError(
            response.status_code, None, "the server answered with invalid JSON"
        ) from None


# --- the sync client ---------------------------------------------------------------


class Client(_Base):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
        )
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=True,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method, self._url(path), headers=self._headers(), **kwargs
                )
            except httpx.TransportError as exc:
                raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from None
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return response
            attempt += 1
            self._sleep(delay)

    def models(self) -> list[Model]:
        data = _json(self._send("GET", "/models"))
        return [Model.from_json(item) for item in data.get("data", [])]

    def credits(self) -> int:
        return int(_json(self._send("GET", "/credits"))["data"]["credits"])

    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        quantity: int | None = None,
        reference_image_urls: Iterable[str] | None = None,
        mode: Literal["sync", "async"] = "sync",
        seed: int | None = None,
    ) -> Generation:
        """sync: waits for the images; async: returns as soon as it is accepted."""
        if mode not in ("sync", "async"):
            raise ValueError("generate() takes mode 'sync' or 'async'; use stream() to stream")
        body = _generate_body(
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            quantity=quantity,
            reference_image_urls=reference_image_urls,
            mode=mode,
            seed=seed,
        )
        return Generation.from_json(_json(self._send("POST", "/generate", json=body)))

    def stream(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        quantity: int | None = None,
        reference_image_urls: Iterable[str] | None = None,
        seed: int | None = None,
    ) -> Iterator[StreamEvent]:
        """The generation's events as they arrive; the last is `complete` or `error`."""
        body = _generate_body(
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            quantity=quantity,
            reference_image_urls=reference_image_urls,
            mode="stream",
            seed=seed,
        )
        attempt = 0
        while True:
            try:
                with self._http.stream(
                    "POST", self._url("/generate"), headers=self._headers(), json=body
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        delay = self._retry_delay(response, attempt)
                        if delay is None:
                            _raise_for(response)
                    else:
                        for line in response.iter_lines():
                            event = parse_sse_line(line)
                            if event is not None:
                                yield event
                                if event.is_final:
                                    return
                        raise APIConnectionError(_STREAM_CUT)
            except httpx.TransportError as exc:
                raise APIConnectionError(f"connection to {self.base_url} broke: {exc}") from None
            attempt += 1
            self._sleep(delay)

    def get(self, generation_id: str) -> GenerationRecord:
        response = self._send("GET", "/generate", params={"id": generation_id})
        return GenerationRecord.from_json(_json(response)["data"])

    def wait(
        self,
        generation_id: str,
        *,
        timeout: float = 600.0,
        clock: Callable[[], float] | None = None,
    ) -> GenerationRecord:
        """Poll (exponential backoff) until the generation is completed or failed."""
        now = clock or time.monotonic
        deadline = now() + timeout
        interval = self.poll_interval
        while True:
            record = self.get(generation_id)
            if record.is_terminal:
                return record
            left = deadline - now()
            if left <= 0:
                raise WaitTimeoutError(generation_id, timeout)
            self._sleep(min(interval * (0.9 + 0.2 * random.random()), left))
            interval = self._next_poll(interval)

    def download(
        self, source: Downloadable, folder: str | Path, *, generation_id: str | None = None
    ) -> list[Path]:
        """Save the images into `folder` as `{generationId}_{i}{ext}`; their paths."""
        gid, urls = _download_targets(source, generation_id)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, url in enumerate(urls):
            try:
                response = self._http.get(url)  # image URLs are signed: no key sent
            except httpx.TransportError as exc:
                raise APIConnectionError(f"cannot download an image: {exc}") from None
            _raise_for(response)
            path = folder / image_filename(gid, index, url)
            path.write_bytes(response.content)
            paths.append(path)
        return paths


# --- the async client --------------------------------------------------------------


class AsyncClient(_Base):
    """The same API as `Client`, with coroutines (`stream` is an async iterator)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll_interval: float = 0.5,
        max_poll_interval: float = 5.0,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=True,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method, self._url(path), headers=self._headers(), **kwargs
                )
            except httpx.TransportError as exc:
                raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from None
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return response
            attempt += 1
            await self._sleep(delay)

    async def models(self) -> list[Model]:
        data = _json(await self._send("GET", "/models"))
        return [Model.from_json(item) for item in data.get("data", [])]

    async def credits(self) -> int:
        return int(_json(await self._send("GET", "/credits"))["data"]["credits"])

    async def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        quantity: int | None = None,
        reference_image_urls: Iterable[str] | None = None,
        mode: Literal["sync", "async"] = "sync",
        seed: int | None = None,
    ) -> Generation:
        if mode not in ("sync", "async"):
            raise ValueError("generate() takes mode 'sync' or 'async'; use stream() to stream")
        body = _generate_body(
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            quantity=quantity,
            reference_image_urls=reference_image_urls,
            mode=mode,
            seed=seed,
        )
        return Generation.from_json(_json(await self._send("POST", "/generate", json=body)))

    async def stream(
        self,
        prompt: str,
        *,
        model: str | None = None,
        aspect_ratio: str | None = None,
        quantity: int | None = None,
        reference_image_urls: Iterable[str] | None = None,
        seed: int | None = None,
    ) -> AsyncIterator[StreamEvent]:
        body = _generate_body(
            prompt,
            model=model,
            aspect_ratio=aspect_ratio,
            quantity=quantity,
            reference_image_urls=reference_image_urls,
            mode="stream",
            seed=seed,
        )
        attempt = 0
        while True:
            try:
                async with self._http.stream(
                    "POST", self._url("/generate"), headers=self._headers(), json=body
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        delay = self._retry_delay(response, attempt)
                        if delay is None:
                            _raise_for(response)
                    else:
                        async for line in response.aiter_lines():
                            event = parse_sse_line(line)
                            if event is not None:
                                yield event
                                if event.is_final:
                                    return
                        raise APIConnectionError(_STREAM_CUT)
            except httpx.TransportError as exc:
                raise APIConnectionError(f"connection to {self.base_url} broke: {exc}") from None
            attempt += 1
            await self._sleep(delay)

    async def get(self, generation_id: str) -> GenerationRecord:
        response = await self._send("GET", "/generate", params={"id": generation_id})
        return GenerationRecord.from_json(_json(response)["data"])

    async def wait(
        self,
        generation_id: str,
        *,
        timeout: float = 600.0,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
        clock: Callable[[], float] | None = None,
    ) -> GenerationRecord:
        now = clock or time.monotonic
        deadline = now() + timeout
        interval = self.poll_interval
        while True:
            record = await self.get(generation_id)
            if record.is_terminal:
                return record
            left = deadline - now()
            if left <= 0:
                raise WaitTimeoutError(generation_id, timeout)
            await self._sleep(min(interval * (0.9 + 0.2 * random.random()), left))
            interval = self._next_poll(interval)

    async def download(
        self, source: Downloadable, folder: str | Path, *, generation_id: str | None = None
    ) -> list[Path]:
        gid, urls = _download_targets(source, generation_id)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, url in enumerate(urls):
            try:
                response = await self._http.get(url)
            except httpx.TransportError as exc:
                raise APIConnectionError(f"cannot download an image: {exc}") from None
            _raise_for(response)
            path = folder / image_filename(gid, index, url)
            path.write_bytes(response.content)
            paths.append(path)
        return paths
