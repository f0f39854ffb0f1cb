"""Gemini native image generation ("Nano Banana") as a backend, through the
official `google-genai` SDK.

One upstream call makes one image: `quantity` images are that many parallel
calls, bounded across all requests by `gemini_concurrency`. The SDK does not
retry; this module does, on 429, 5xx and transport errors, through
`upstream_retry` (jittered backoff under the request's deadline), honouring
Google's `RetryInfo`.

Every call ends `Made`, `Blocked` or `Failed`; `outcomes.settle` turns a
request's calls into its result (messages safe to show clients: never the key,
never a raw exception).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from google import genai
from google.genai import errors, types

from bananastand.catalog import ModelSpec
from bananastand.config import Settings
from bananastand.providers import Progress, api_key, register
from bananastand.providers.base import (
    BaseProvider,
    GeneratedImage,
    ImageRequest,
    ProviderResult,
)
from bananastand.providers.outcomes import Blocked, Failed, Made, Outcome, settle
from bananastand.providers.progress_reporter import ProgressReporter
from bananastand.providers.upstream_retry import (
    GaveUp,
    RetryableFailure,
    RetryPolicy,
    call_with_retries,
)
from bananastand.providers.waiting_ticker import WaitingTicker
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
# it closes 1/e of the remaining gap every 20 s: half of it every 20·ln 2 s
WAIT_HALF_LIFE_SECONDS = 20 * math.log(2)
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
    report: ProgressReporter
    received: int = 0
    sent_at: float | None = None  # when the first call got a slot (time.monotonic())

    async def image_received(self) -> None:
        self.received += 1
        share = self.received / self.request.quantity
        fraction = 0.1 + (RECEIVED_CEILING - 0.1) * share
        await self.report(fraction, f"Received image {self.received} of {self.request.quantity}")

    def all_received(self) -> bool:
        return self.received >= self.request.quantity

    def received_so_far(self) -> str:
        if not self.received:
            return ""
        return f" ({self.received} of {self.request.quantity} images received)"


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
        run = Run(request, ProgressReporter(progress))
        asked = request.model or request.backend_model
        await run.report(0.05, f"Accepted by {asked}; sending to Gemini")
        contents = _contents(request)
        ticker = WaitingTicker(
            run.report,
            "Gemini",
            since=lambda: run.sent_at,
            interval=self.tick_seconds,
            ceiling=WAIT_CEILING,
            half_life=WAIT_HALF_LIFE_SECONDS,
            finished=run.all_received,
            detail=run.received_so_far,
        )
        async with ticker.running(), asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._one(run, contents, index))
                for index in range(request.quantity)
            ]
        return settle([task.result() for task in tasks], upstream="Gemini")

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

        async def attempt() -> Outcome:
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
                raise RetryableFailure(str(exc.code), failure, retry_delay(exc)) from exc
            except TRANSIENT_ERRORS as exc:
                short = type(exc).__name__
                raise RetryableFailure(short, f"Could not reach Gemini ({short})") from exc
            except ValueError as exc:  # JSON or schema errors reading the answer
                log.warning("gemini answer unreadable: %s", type(exc).__name__)
                return Failed("Gemini sent an answer that could not be read")
            except Exception as exc:  # a bug or an SDK surprise: keep the other images
                log.exception("gemini call failed unexpectedly")
                return Failed(f"Gemini call failed unexpectedly ({type(exc).__name__})")
            outcome = parse_response(response)
            if isinstance(outcome, Made):
                await run.image_received()
            return outcome

        try:
            return await call_with_retries(
                attempt,
                policy=RetryPolicy(self.max_attempts, self.backoff_seconds),
                deadline=request.deadline,
                upstream="Gemini",
                report=run.report,
            )
        except GaveUp as exc:
            return Failed(_gave_up(exc))


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


def _gave_up(exc: GaveUp) -> str:
    """The client's message when retrying ended: Gemini's own wording of running out
    of time (clients have always read it; OpenAI's is `GaveUp`'s own)."""
    if exc.wait is None:
        return str(exc)
    return (
        f"{exc.failure.message}; gave up after {exc.tries}: waiting {exc.wait:.1f} s to retry "
        "would pass the model's timeout"
    )


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
