"""Gemini native image generation ("Nano Banana") as a backend, through the
official `google-genai` SDK.

One upstream call makes one image: `quantity` images are that many parallel
calls, bounded across all requests by `gemini_concurrency`. The SDK does not
retry; this module does, on 429, 5xx and transport errors, with exponential
backoff (jittered, never below half its window), honouring Google's `RetryInfo`
and never sleeping past the request's deadline.

Outcome policy: every call ends in an image, a safety block or a failure. Any
image → those images, with the other calls' reasons as per-image errors (the
rest is refunded). No image and at least one safety block → the contract's
safety warning. No image otherwise → `ProviderError` with a message safe to
show clients (never the key, never a raw exception).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from google import genai
from google.genai import errors, types

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
    backoff_delay,
)
from bananastand.retry_after import retry_after_from_headers

log = logging.getLogger(__name__)

# Candidate finish reasons that are a safety (policy) verdict. NO_IMAGE, OTHER and
# IMAGE_OTHER say nothing about the content: they are plain failures.
SAFETY_FINISH_REASONS = frozenset(
    {
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
    }
)
RETRYABLE_CODES = frozenset({429, 500, 502, 503, 504})
MESSAGE_LIMIT = 300
TEXT_LIMIT = 200
WAIT_CEILING = 0.8  # the waiting ticker creeps toward this fraction, never reaching it
RECEIVED_CEILING = 0.85  # fraction once every image has arrived
MAX_SEED = 2**31


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP library the SDK runs on."""
    found: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for module, name in (
        ("httpx", "TransportError"),
        ("httpx2", "TransportError"),
        ("aiohttp", "ClientConnectionError"),
    ):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(__import__(module), name))
    return tuple(found)


TRANSIENT_ERRORS = _transient_errors()


# --- outcomes of one call --------------------------------------------------------
@dataclass(frozen=True)
class Made:
    image: GeneratedImage


@dataclass(frozen=True)
class Blocked:
    reason: str  # e.g. "IMAGE_SAFETY" or "prompt blocked: SAFETY"


@dataclass(frozen=True)
class Failed:
    message: str


Outcome = Made | Blocked | Failed


def parse_response(response: types.GenerateContentResponse) -> Outcome:
    """What one `generateContent` answer amounts to (thought drafts skipped)."""
    candidates = response.candidates or []
    if not candidates:
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            return Blocked(f"prompt blocked: {_enum(feedback.block_reason)}")
        return Failed("Gemini answered with no result")
    candidate = candidates[0]
    content = candidate.content
    parts = [p for p in (content.parts or []) if not p.thought] if content else []
    images = [
        p.inline_data
        for p in parts
        if p.inline_data is not None
        and p.inline_data.data
        and (p.inline_data.mime_type or "image/png").startswith("image/")
    ]
    if images:
        final = images[-1]  # one image per call: the last is the finished one
        return Made(GeneratedImage(final.data or b"", final.mime_type or "image/png"))
    finish = _enum(candidate.finish_reason) if candidate.finish_reason else None
    if finish in SAFETY_FINISH_REASONS:
        return Blocked(finish)
    text = " ".join(" ".join(p.text.split()) for p in parts if p.text).strip()
    if text:
        return Failed(f"Gemini answered with text and no image: {text[:TEXT_LIMIT]}")
    return Failed(f"Gemini returned no image (finish reason {finish or 'unknown'})")


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value))


# --- errors ------------------------------------------------------------------------
def describe_api_error(exc: errors.APIError, redact: str = "") -> str:
    """A client-safe sentence for an upstream HTTP error."""
    code = exc.code
    label = f"{code} {exc.status}" if exc.status else str(code)
    reason = _clean(exc.message, redact)
    if code == 429:
        return f"Gemini rate limit ({label})"
    if code == 503:
        return f"Gemini is overloaded ({label})"
    if code is not None and code >= 500:
        return f"Gemini server error ({label})"
    if code in (401, 403):
        head = f"Gemini refused this server's API key ({label})"
    elif code == 404:
        head = f"Gemini does not know this model ({label})"
    else:
        head = f"Gemini rejected the request ({label})"
    return f"{head}: {reason}" if reason else head


def _clean(message: Any, redact: str) -> str:
    if not isinstance(message, str):
        return ""
    text = " ".join(message.split())
    if redact:
        text = text.replace(redact, "***")
    return text[:MESSAGE_LIMIT]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


def retry_delay(exc: errors.APIError) -> float:
    """Seconds Google asks us to wait (`google.rpc.RetryInfo`, `Retry-After`); 0 if none."""
    body = exc.details if isinstance(exc.details, dict) else {}
    inner = body.get("error")
    error: dict[str, Any] = inner if isinstance(inner, dict) else body
    wanted = 0.0
    for detail in error.get("details") or []:
        if not isinstance(detail, dict) or not str(detail.get("@type", "")).endswith(
            "google.rpc.RetryInfo"
        ):
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and (match := _DURATION.match(delay)):
            wanted = max(wanted, float(match.group(1)))
        elif isinstance(delay, dict):
            seconds = float(delay.get("seconds") or 0) + float(delay.get("nanos") or 0) / 1e9
            wanted = max(wanted, seconds)
    headers = getattr(getattr(exc, "response", None), "headers", None)
    with contextlib.suppress(AttributeError, TypeError):  # headers of an unknown kind
        wanted = max(wanted, retry_after_from_headers(headers) or 0.0)
    return wanted


# --- progress ----------------------------------------------------------------------
@dataclass
class Run:
    """One `generate()` call: its progress (never decreasing) and its counters."""

    request: ImageRequest
    progress: Progress
    fraction: float = 0.0
    received: int = 0
    sent_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def report(self, fraction: float | None, message: str) -> None:
        async with self.lock:
            if fraction is not None:
                self.fraction = max(self.fraction, min(fraction, 1.0))
            await self.progress(self.fraction, message)

    async def image_received(self) -> None:
        self.received += 1
        share = self.received / self.request.quantity
        fraction = 0.1 + (RECEIVED_CEILING - 0.1) * share
        await self.report(fraction, f"Received image {self.received} of {self.request.quantity}")

    def waiting_fraction(self, elapsed: float) -> float:
        return 0.1 + (WAIT_CEILING - 0.1) * (1 - math.exp(-elapsed / 20))


# --- the provider --------------------------------------------------------------------
class GeminiProvider(BaseProvider):
    """Calls `models.generate_content` once per image, retrying what can be retried.
    Every model counts as available (`BaseProvider.unavailable`): there is no cheap
    way to ask upstream, so failures surface per request."""

    name = "gemini"

    def __init__(
        self,
        client: genai.Client,
        *,
        concurrency: int,
        max_attempts: int,
        backoff_seconds: float,
        redact: str = "",
        tick_seconds: float = 1.0,
    ) -> None:
        self._client = client
        self._aio = client.aio
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self.max_attempts = max(1, max_attempts)
        self.backoff_seconds = backoff_seconds
        self.tick_seconds = tick_seconds
        self._redact = redact  # removed from any upstream text we pass on

    def __repr__(self) -> str:
        return f"GeminiProvider(concurrency={self._concurrency})"

    async def aclose(self) -> None:
        await self._aio.aclose()
        self._client.close()

    async def generate(self, request: ImageRequest, progress: Progress) -> ProviderResult:
        run = Run(request, progress)
        asked = request.model or request.backend_model
        await run.report(0.05, f"Accepted by {asked}; sending to Gemini")
        contents = _contents(request)
        ticker = asyncio.create_task(self._tick(run), name="gemini-progress")
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._one(run, contents, index))
                    for index in range(request.quantity)
                ]
        finally:
            ticker.cancel()
            await asyncio.wait([ticker])
            if not ticker.cancelled() and ticker.exception() is not None:
                log.warning("gemini progress ticker failed: %r", ticker.exception())
        return settle([task.result() for task in tasks])

    async def _tick(self, run: Run) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            if run.sent_at is None:
                continue
            if run.received >= run.request.quantity:
                return  # nothing left to wait for
            elapsed = time.monotonic() - run.sent_at
            message = f"Waiting for Gemini… {elapsed:.0f} s"
            if run.received:
                message += f" ({run.received} of {run.request.quantity} images received)"
            await run.report(run.waiting_fraction(elapsed), message)

    @contextlib.asynccontextmanager
    async def _slot(self, run: Run) -> AsyncIterator[None]:
        if run.sent_at is None and self._slots.locked():
            await run.report(
                None, f"Waiting for a free Gemini slot ({self._concurrency} calls in flight)"
            )
        async with self._slots:
            if run.sent_at is None:
                run.sent_at = time.monotonic()
                await run.report(0.1, f"Sent to Gemini ({run.request.backend_model})")
            yield

    async def _one(self, run: Run, contents: list[Any], index: int) -> Outcome:
        """One image: one call, retried on 429/5xx/transport errors."""
        request = run.request
        config = _config(request, index)
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with self._slot(run):
                    response = await self._aio.models.generate_content(
                        model=request.backend_model, contents=contents, config=config
                    )
            except errors.APIError as exc:
                failure = describe_api_error(exc, self._redact)
                if exc.code not in RETRYABLE_CODES:
                    log.warning("gemini call failed: %s", failure)
                    return Failed(failure)
                short, floor = str(exc.code), retry_delay(exc)
            except TRANSIENT_ERRORS as exc:
                short = type(exc).__name__
                failure, floor = f"Could not reach Gemini ({short})", 0.0
            except ValueError as exc:  # JSON or schema errors reading the answer
                log.warning("gemini answer unreadable: %s", type(exc).__name__)
                return Failed("Gemini sent an answer that could not be read")
            except Exception as exc:  # a bug or an SDK surprise: keep the other images
                log.exception("gemini call failed unexpectedly")
                return Failed(f"Gemini call failed unexpectedly ({type(exc).__name__})")
            else:
                outcome = parse_response(response)
                if isinstance(outcome, Made):
                    await run.image_received()
                return outcome
            delay = self._backoff(attempt, floor)
            tries = f"{attempt} {'try' if attempt == 1 else 'tries'}"
            if attempt == self.max_attempts:
                log.warning("gemini call failed: %s; gave up after %s", failure, tries)
                return Failed(f"{failure}; gave up after {tries}")
            if request.deadline is not None and time.monotonic() + delay >= request.deadline:
                log.warning("gemini call failed: %s; no time left to retry", failure)
                return Failed(
                    f"{failure}; gave up after {tries}: waiting {delay:.1f} s to retry "
                    "would pass the model's timeout"
                )
            log.info("gemini call: %s; retry %d in %.2f s", failure, attempt + 1, delay)
            await run.report(
                None,
                f"Gemini busy ({short}), retrying in {delay:.1f} s "
                f"(try {attempt + 1} of {self.max_attempts})",
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int, floor: float) -> float:
        """Jittered exponential backoff (see `backoff_delay`), at least what upstream asked."""
        return max(backoff_delay(attempt, self.backoff_seconds), floor)


def _contents(request: ImageRequest) -> list[Any]:
    parts: list[Any] = [request.prompt]
    parts += [
        types.Part.from_bytes(data=ref.data, mime_type=ref.mime_type) for ref in request.references
    ]
    return parts


def _config(request: ImageRequest, index: int) -> types.GenerateContentConfig:
    image_size = request.options.get("imageSize")
    image_config = types.ImageConfig(
        aspect_ratio=request.aspect_ratio or None,
        image_size=str(image_size) if image_size else None,
    )
    return types.GenerateContentConfig(
        response_modalities=["IMAGE"],
        image_config=image_config,
        seed=(request.seed + index) % MAX_SEED,
    )


def settle(outcomes: Sequence[Outcome]) -> ProviderResult:
    """Apply the outcome policy (see the module docstring)."""
    images = [o.image for o in outcomes if isinstance(o, Made)]
    if not images:
        if any(isinstance(o, Blocked) for o in outcomes):
            return ProviderResult(images=[], safety_message=SAFETY_MESSAGE)
        reasons = dict.fromkeys(o.message for o in outcomes if isinstance(o, Failed))
        raise ProviderError("; ".join(list(reasons)[:3]) or "Gemini made no image")
    total = len(outcomes)
    problems = []
    for number, outcome in enumerate(outcomes, start=1):
        if isinstance(outcome, Failed):
            problems.append(f"image {number} of {total}: {outcome.message}")
        elif isinstance(outcome, Blocked):
            problems.append(
                f"image {number} of {total}: blocked by Gemini's safety filter ({outcome.reason})"
            )
    return ProviderResult(images=images, errors=problems)


@register("gemini")
def create(settings: Settings, models: Sequence[ModelSpec]) -> GeminiProvider:
    key = api_key(settings, "gemini")
    client = genai.Client(
        api_key=key,
        vertexai=False,
        http_options=types.HttpOptions(
            base_url=settings.gemini_base_url or None,
            api_version="v1beta",
            # One try per SDK call (this also turns off its implicit aiohttp retry):
            # we retry ourselves, within the request's deadline.
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )
    return GeminiProvider(
        client,
        concurrency=settings.gemini_concurrency,
        max_attempts=settings.upstream_max_attempts,
        backoff_seconds=settings.upstream_backoff_seconds,
        redact=key,
    )
