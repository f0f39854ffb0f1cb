"""OpenAI's GPT image models (gpt-image-1 and successors) as a backend, through the
official `openai` SDK (`AsyncOpenAI`).

Text-to-image posts to `/images/generations` (through the SDK's client, taking the
JSON answer as it comes: the typed `images.generate` spends more time building
and parsing models than the call itself takes), image-to-image calls
`images.edit` with every reference image (the wire's repeated `image[]` field).
The SDK runs on aiohttp (`DefaultAioHttpClient`), its fastest transport. The catalogue entry's
`options` choose `quality` (low|medium|high|auto), `outputFormat` (png|jpeg|webp)
and `partialImages` (0-3): above 0, each image is streamed on its own call and
every partial image the API sends becomes a progress stage (and, when the
request asks for previews, that stage's preview).

The SDK's own retries are off (`max_retries=0`): this module retries 429, 408,
5xx, connection failures and timeouts itself, through `upstream_retry`
(jittered backoff under the request's deadline), honouring `retry-after-ms` /
`retry-after`. A provider-wide semaphore bounds the calls in flight
(`openai_concurrency`). OpenAI's moderation verdict (400 `moderation_blocked`)
becomes the contract's safety warning; every other failure becomes a
`ProviderError` whose message is safe to show to clients: it never holds the API
key, an exception repr or more than a few hundred characters of upstream text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import httpx
import openai
from openai import AsyncOpenAI
from PIL import Image

from bananastand.aspect_ratios import parse_ratio
from bananastand.catalog import ModelSpec
from bananastand.config import Settings
from bananastand.providers import Progress, api_key, register
from bananastand.providers.base import (
    SAFETY_MESSAGE,
    BaseProvider,
    GeneratedImage,
    ImageRequest,
    ProviderError,
    ProviderResult,
    ReferenceImage,
)
from bananastand.providers.outcomes import (
    Blocked,
    Failed,
    Made,
    Outcome,
    safety_verdict,
    settle,
)
from bananastand.providers.progress_reporter import ProgressReporter
from bananastand.providers.upstream_retry import RetryableFailure, RetryPolicy, call_with_retries
from bananastand.providers.waiting_ticker import WaitingTicker
from bananastand.retry_after import retry_after_from_headers

log = logging.getLogger(__name__)

T = TypeVar("T")

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
SQUARE, LANDSCAPE, PORTRAIT = "1024x1024", "1536x1024", "1024x1536"
MAX_PARTIAL_IMAGES = 3  # the API's limit
MAX_UPSTREAM_MESSAGE = 300  # characters of OpenAI's error message shown to clients
TICK_SECONDS = 1.0  # interval of the "Waiting for OpenAI…" progress events
TICK_CEILING = 0.8  # the waiting ticker creeps toward this fraction, never past it
TICK_HALF_LIFE_SECONDS = 20.0
RETRYABLE_STATUSES = frozenset({408, 429})  # and every 5xx


def size_for_ratio(aspect_ratio: str | None) -> str:
    """The GPT image size for a contract aspect ratio: square, landscape or portrait;
    `auto` (the model decides; for edits, from the input) when none was asked."""
    if not aspect_ratio:
        return "auto"
    try:
        width, height = parse_ratio(aspect_ratio)
    except ValueError:
        return "auto"
    if width == height:
        return SQUARE
    return LANDSCAPE if width > height else PORTRAIT


# --- failures, as this module classifies them -----------------------------------------
class _Blocked(Exception):
    """OpenAI's moderation refused the prompt or the images."""


class _Unreadable(Exception):
    """OpenAI answered, but not with anything this module can read."""


# --- progress -------------------------------------------------------------------------
@dataclass
class _StreamCounter:
    """Partial images received across a request's parallel streams."""

    total: int
    received: int = 0


@dataclass(frozen=True)
class _Call:
    """What one request asks OpenAI for, independent of n and of streaming."""

    model: str
    prompt: str
    size: str
    quality: str
    output_format: str
    partial_images: int
    images: tuple[tuple[str, bytes, str], ...] = ()  # edits: (filename, bytes, mime)

    @property
    def is_edit(self) -> bool:
        return bool(self.images)

    def arguments(self, n: int) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "n": n,
            "size": self.size,
            "quality": self.quality,
            "output_format": self.output_format,
        }
        if self.images:
            arguments["image"] = list(self.images)
        return arguments


# --- the provider ---------------------------------------------------------------------
@dataclass
class OpenAIImagesProvider(BaseProvider):
    """The `openai` backend: one `AsyncOpenAI` client shared by every request."""

    client: AsyncOpenAI
    max_concurrency: int = 4
    max_attempts: int = 4
    backoff_seconds: float = 1.0
    name: str = "openai"
    # calls holding / waiting for one of the `max_concurrency` slots (for metrics, tests)
    in_flight: int = 0
    waiting: int = 0
    _semaphore: asyncio.Semaphore = field(init=False, repr=False)
    _key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._semaphore = asyncio.Semaphore(self.max_concurrency)
        self._key = self.client.api_key if isinstance(self.client.api_key, str) else ""

    async def aclose(self) -> None:
        await self.client.close()

    # --- generating -----------------------------------------------------------------
    async def generate(self, request: ImageRequest, progress: Progress) -> ProviderResult:
        call = _call_for(request)
        report = ProgressReporter(progress)
        await report(0.05, f"Sending to OpenAI ({request.backend_model})")
        started = time.monotonic()
        ticker = WaitingTicker(
            report,
            "OpenAI",
            since=lambda: started,
            interval=TICK_SECONDS,
            ceiling=TICK_CEILING,
            half_life=TICK_HALF_LIFE_SECONDS,
        )
        async with ticker.running():
            if call.partial_images:
                result = await self._streamed(request, call, report)
            else:
                result = await self._whole(request, call, report)
        if result.images:
            count = len(result.images)
            await report(0.95, f"Received {count} image{'s' if count != 1 else ''}")
        return result

    async def _whole(
        self, request: ImageRequest, call: _Call, report: ProgressReporter
    ) -> ProviderResult:
        """One call for all the images, answered as JSON."""
        arguments = call.arguments(request.quantity)

        async def send() -> Any:
            if call.is_edit:
                return (await self.client.images.edit(**arguments)).model_dump()
            answer = await self.client.post(
                "/images/generations", body=arguments, cast_to=httpx.Response
            )
            return answer.json()

        try:
            response = await self._with_retries(request, report, send)
        except _Blocked:
            return safety_verdict()
        items = response.get("data") if isinstance(response, dict) else None
        if not isinstance(items, list):
            raise ProviderError("OpenAI sent an answer that could not be read")
        images: list[GeneratedImage] = []
        errors: list[str] = []
        for index, item in enumerate(items[: request.quantity]):
            try:
                encoded = item.get("b64_json") if isinstance(item, dict) else None
                images.append(_decode(encoded, call.output_format))
            except _Unreadable as exc:
                errors.append(f"image {index + 1}: {exc}")
        if len(items) < request.quantity:
            errors.append(f"OpenAI returned {len(items)} of {request.quantity} images")
        if not images:
            raise ProviderError("OpenAI returned no images" + (f" ({errors[0]})" if items else ""))
        return ProviderResult(images=images, errors=errors)

    async def _streamed(
        self, request: ImageRequest, call: _Call, report: ProgressReporter
    ) -> ProviderResult:
        """One streamed call per image (the API streams one image per call), in
        parallel; each partial image is a progress stage."""
        counter = _StreamCounter(total=request.quantity * call.partial_images)
        outcomes = await asyncio.gather(
            *(self._stream_one(request, call, report, counter, i) for i in range(request.quantity))
        )
        return settle(outcomes, upstream="OpenAI", describe=_describe_missing, max_reasons=1)

    async def _stream_one(
        self,
        request: ImageRequest,
        call: _Call,
        report: ProgressReporter,
        counter: _StreamCounter,
        index: int,
    ) -> Outcome:
        arguments = {
            **call.arguments(1),
            "stream": True,
            "partial_images": call.partial_images,
        }
        which = f"Image {index + 1} of {request.quantity}: p" if request.quantity > 1 else "P"

        async def send() -> str:
            if call.is_edit:
                stream = await self.client.images.edit(**arguments)
            else:
                stream = await self.client.images.generate(**arguments)
            final: str | None = None
            async with stream:
                async for event in stream:
                    kind = str(getattr(event, "type", ""))
                    if kind.endswith(".partial_image"):
                        # a retried stream sends its partial images again: cap the count
                        counter.received = min(counter.received + 1, counter.total)
                        number = int(getattr(event, "partial_image_index", 0) or 0) + 1
                        preview = None
                        if request.previews is not None:
                            preview = _preview(getattr(event, "b64_json", None))
                        await report(
                            0.1 + 0.75 * counter.received / max(1, counter.total),
                            f"{which}artial image {number} of {call.partial_images}",
                            preview=preview,
                        )
                    elif kind.endswith(".completed"):
                        final = getattr(event, "b64_json", None)
            if final is None:
                raise _Unreadable("OpenAI's stream ended without an image")
            return final

        try:
            encoded = await self._with_retries(request, report, send)
            return Made(_decode(encoded, call.output_format))
        except _Blocked:
            return Blocked("moderation_blocked")
        except (_Unreadable, ProviderError) as exc:
            return Failed(str(exc))

    # --- calling, with retries ------------------------------------------------------
    async def _with_retries(
        self, request: ImageRequest, report: ProgressReporter, send: Callable[[], Awaitable[T]]
    ) -> T:
        """Run `send` under the concurrency bound; retry transient failures.
        Raises `_Blocked`, `_Unreadable` (from `send`) or `ProviderError`."""

        async def attempt() -> T:
            try:
                return await self._bounded(send)
            except openai.APIStatusError as exc:
                raise self._status_failure(exc) from exc
            except openai.APITimeoutError as exc:
                if _connect_failed(exc):
                    raise RetryableFailure("connection error", "Could not reach OpenAI") from exc
                raise RetryableFailure("timeout", "OpenAI did not answer in time") from exc
            except openai.APIConnectionError as exc:
                raise RetryableFailure("connection error", "Could not reach OpenAI") from exc
            except openai.APIError as exc:  # an error event inside a stream
                raise self._stream_failure(exc) from exc
            except (ValueError, TypeError, KeyError, AttributeError):
                # e.g. a JSON body cut short: the SDK's json.JSONDecodeError
                raise ProviderError("OpenAI sent an answer that could not be read") from None

        return await call_with_retries(
            attempt,
            policy=RetryPolicy(self.max_attempts, self.backoff_seconds),
            deadline=request.deadline,
            upstream="OpenAI",
            report=report,
        )

    async def _bounded(self, send: Callable[[], Awaitable[T]]) -> T:
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            return await send()
        finally:
            self.in_flight -= 1
            self._semaphore.release()

    def _status_failure(self, exc: openai.APIStatusError) -> RetryableFailure:
        """Classify an HTTP error: return it when worth retrying, raise otherwise."""
        status = exc.status_code
        code = exc.code or ""
        if code == "moderation_blocked":
            raise _Blocked()
        if status == 429:
            return RetryableFailure("429", "OpenAI rate limit (429)", _retry_after(exc.response))
        if status >= 500 or status in RETRYABLE_STATUSES:
            return RetryableFailure(
                str(status), f"OpenAI server error ({status})", _retry_after(exc.response)
            )
        if status in (401, 403):
            # OpenAI's text may quote part of the key: not forwarded.
            raise ProviderError(
                f"OpenAI refused this server's credentials ({status}"
                f"{' ' + code if code else ''}); the operator must check its OpenAI API key"
            )
        kind = exc.type or code or "error"
        raise ProviderError(
            f"OpenAI rejected the request ({status} {kind}): {self._upstream_text(exc)}"
        )

    def _stream_failure(self, exc: openai.APIError) -> RetryableFailure:
        """Classify an `error` event received inside a stream."""
        code = exc.code or ""
        if code == "moderation_blocked":
            raise _Blocked()
        if exc.type == "server_error" or code in ("server_error", "rate_limit_exceeded"):
            return RetryableFailure("stream error", "OpenAI failed while streaming")
        raise ProviderError(f"OpenAI failed while streaming: {self._upstream_text(exc)}")

    def _upstream_text(self, exc: openai.APIError) -> str:
        """OpenAI's own error message, cleaned for clients: one line, bounded, with
        the key blanked out should it appear."""
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message.strip():
            return "no details given"
        if self._key:
            message = message.replace(self._key, "[redacted]")
        message = re.sub(r"\s+", " ", message).strip()
        if len(message) > MAX_UPSTREAM_MESSAGE:
            message = message[: MAX_UPSTREAM_MESSAGE - 1].rstrip() + "…"
        return message


# --- helpers ----------------------------------------------------------------------------
def _describe_missing(number: int, total: int, outcome: Blocked | Failed, upstream: str) -> str:
    """A streamed image not made, as OpenAI's clients have always read it:
    "image 2: <reason>" (a moderation block: the safety message)."""
    reason = SAFETY_MESSAGE if isinstance(outcome, Blocked) else outcome.message
    return f"image {number}: {reason}"


def _call_for(request: ImageRequest) -> _Call:
    options = request.options
    output_format = str(options.get("outputFormat", "png")).lower()
    if output_format == "jpg":
        output_format = "jpeg"
    try:
        partial_images = int(options.get("partialImages", 0) or 0)
    except (TypeError, ValueError):
        partial_images = 0
    return _Call(
        model=request.backend_model,
        prompt=request.prompt,
        size=size_for_ratio(request.aspect_ratio),
        quality=str(options.get("quality", "auto")),
        output_format=output_format,
        partial_images=max(0, min(partial_images, MAX_PARTIAL_IMAGES)),
        images=tuple(_upload(ref, i) for i, ref in enumerate(request.references)),
    )


def _upload(reference: ReferenceImage, index: int) -> tuple[str, bytes, str]:
    """A reference as an `image[]` file; formats OpenAI does not take become PNG."""
    extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
        reference.mime_type
    )
    if extension is not None:
        return (f"reference-{index + 1}.{extension}", reference.data, reference.mime_type)
    buffer = io.BytesIO()
    with reference.open() as image:
        image.convert("RGBA").save(buffer, "PNG")
    return (f"reference-{index + 1}.png", buffer.getvalue(), "image/png")


def _decode(encoded: Any, output_format: str) -> GeneratedImage:
    """Base64 image data → a checked `GeneratedImage`."""
    if not isinstance(encoded, str) or not encoded:
        raise _Unreadable("OpenAI sent no image data")
    try:
        data = base64.b64decode(encoded, validate=True)
        with Image.open(io.BytesIO(data)) as image:
            detected = Image.MIME.get(image.format or "")
    except (binascii.Error, ValueError, OSError):
        raise _Unreadable("OpenAI sent an image that could not be read") from None
    return GeneratedImage(
        data=data, mime_type=detected or MIME_TYPES.get(output_format, "image/png")
    )


def _preview(encoded: Any) -> Image.Image | None:
    """A partial image as a (lazily decoded) preview; None if it cannot be read."""
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        return Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
    except (binascii.Error, ValueError, OSError):
        return None


def _connect_failed(exc: BaseException) -> bool:
    """Whether a "timeout" was really a connection that could not be made (the
    aiohttp transport reports a refused connection as a connect timeout)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError | aiohttp.ClientConnectorError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(response: Any) -> float | None:
    """Seconds the server asked us to wait (see `bananastand.retry_after`), or None."""
    return retry_after_from_headers(getattr(response, "headers", None))


@register("openai")
def create(settings: Settings, models: Sequence[ModelSpec]) -> OpenAIImagesProvider:
    key = api_key(settings, "openai")
    client = AsyncOpenAI(
        api_key=key,
        base_url=settings.openai_base_url or None,
        max_retries=0,  # retried here, within each request's deadline
        # aiohttp: the SDK's fastest transport (several times less CPU per call
        # than its httpx default; see bench/).
        http_client=openai.DefaultAioHttpClient(),
    )
    return OpenAIImagesProvider(
        client=client,
        max_concurrency=settings.openai_concurrency,
        max_attempts=settings.upstream_max_attempts,
        backoff_seconds=settings.upstream_backoff_seconds,
    )
