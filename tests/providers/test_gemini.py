"""The Gemini backend, end to end: the real app over ASGI, the real google-genai
SDK, and a fake Gemini server speaking the REST wire format on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.genai import errors, types
from PIL import Image

from bananastand.providers import ImageRequest, ProviderError, ReferenceImage
from bananastand.providers.base import SAFETY_MESSAGE, GeneratedImage
from bananastand.providers.gemini import (
    GeminiProvider,
    create,
    describe_api_error,
    parse_response,
    retry_delay,
)
from bananastand.providers.outcomes import Blocked, Failed, Made, settle
from tests.fakes.gemini_server import FakeGemini, running_fake_gemini
from tests.support import Api, ApiFactory, Key, data_url, make_settings, parse_sse, png_bytes

KEY = "AIzaFAKE-secret-gemini-key-0123456789"
MODEL = "gemini-2.5-flash-image"

CATALOG = """
[[models]]
name = "nano-banana"
displayName = "Nano Banana"
backend = "gemini"
backendModel = "gemini-2.5-flash-image"
creditsCost = 1
extraImageCost = 1
supportsImageInput = true
supportsAspectRatio = true
aspectRatios = ["1:1", "16:9", "9:16", "4:3"]
maxQuantity = 4
maxReferenceImages = 3
timeoutSeconds = 10

[[models]]
name = "nano-banana-2"
displayName = "Nano Banana 2"
backend = "gemini"
backendModel = "gemini-3.1-flash-image-preview"
creditsCost = 2
supportsImageInput = true
supportsAspectRatio = true
aspectRatios = ["1:1", "16:9"]
maxReferenceImages = 14
timeoutSeconds = 10

[models.options]
imageSize = "2K"

[[models]]
name = "nano-banana-slow"
displayName = "Nano Banana (short timeout)"
backend = "gemini"
backendModel = "gemini-2.5-flash-image"
creditsCost = 1
supportsImageInput = false
supportsAspectRatio = false
timeoutSeconds = 0.5
"""


# --- fixtures and helpers -------------------------------------------------------------
@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with running_fake_gemini(api_key=KEY) as server:
        yield server


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG)
    return path


async def gemini_api(api_factory: ApiFactory, fake: FakeGemini, catalog: Path, **extra: Any) -> Api:
    settings: dict[str, Any] = {
        "catalog_path": catalog,
        "gemini_api_key": KEY,
        "gemini_base_url": fake.url,
        "upstream_backoff_seconds": 0.01,
        "upstream_max_attempts": 3,
    }
    settings.update(extra)
    return await api_factory(**settings)  # type: ignore[no-any-return]


@pytest.fixture
async def api(api_factory: ApiFactory, fake: FakeGemini, catalog: Path) -> Api:
    return await gemini_api(api_factory, fake, catalog)


async def image_of(api: Api, url: str) -> Image.Image:
    response = await api.download(url)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


async def assert_failed_and_refunded(api: Api, key: Key, response: Any, credits: int) -> str:
    """The contract's failure: 502, nothing charged, record failed; returns the message."""
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["success"] is False
    assert body["creditsUsed"] == 0
    assert body["remainingCredits"] == credits
    assert await api.balance(key) == credits
    data = await api.poll(key, body["generationId"])
    assert data["processingStatus"] == "failed"
    assert data["errorMessage"] == body["error"]
    assert data["outputImageUrls"] == []
    return str(body["error"])


async def assert_slot_free_and_books_balanced(api: Api, key: Key) -> None:
    """After any outcome the account's one slot is free again and the ledger adds up."""
    assert await api.ledger_sum(key) == await api.balance(key)
    follow_up = await api.generate(key, prompt="a follow-up banana")
    assert follow_up.status_code == 200, follow_up.text
    assert follow_up.json()["success"] is True
    assert await api.ledger_sum(key) == await api.balance(key)


# --- success paths ---------------------------------------------------------------------
async def test_text_to_image_is_stored_and_charged(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=10)
    response = await api.generate(key, prompt="a ripe banana on a desk")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["creditsUsed"] == 1
    assert body["remainingCredits"] == 9
    [url] = body["imageUrls"]
    image = await image_of(api, url)
    assert (image.format, image.size) == ("PNG", (1024, 1024))  # the final, not the draft
    data = await api.poll(key, body["generationId"])
    assert data["processingStatus"] == "completed"
    assert data["creditsUsed"] == 1
    assert "errorMessage" not in data
    [call] = fake.calls
    assert call.model == MODEL
    assert call.method == "generateContent"
    assert call.texts == ["a ripe banana on a desk"]
    assert call.parts == 1
    assert call.headers["x-goog-api-key"] == KEY
    assert call.response_modalities == ["IMAGE"]
    assert call.aspect_ratio is None
    assert call.image_size is None  # gemini-2.5-flash-image is sent no imageSize
    assert await api.ledger_sum(key) == await api.balance(key) == 9


async def test_thought_drafts_are_skipped(api: Api) -> None:
    key = await api.account(credits=10)
    body = (await api.generate(key, prompt="banana", aspectRatio="4:3")).json()
    # The fake answers [thought draft 64x64, text, final]: only the final is kept.
    [url] = body["imageUrls"]
    assert (await image_of(api, url)).size == (1184, 864)


async def test_image_to_image_sends_the_references_inline(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=10)
    first = png_bytes((40, 30), (10, 200, 10))
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 0, 250)).save(buffer, "JPEG")
    second = buffer.getvalue()
    third = png_bytes((16, 16), (1, 2, 3))
    refs = [data_url(first), data_url(second, "image/jpeg"), data_url(third)]
    response = await api.generate(key, prompt="merge these", referenceImageUrls=refs)
    assert response.status_code == 200, response.text
    assert response.json()["creditsUsed"] == 3  # 1 + 1 per extra reference
    [call] = fake.calls
    assert call.parts == 4
    assert call.texts == ["merge these"]
    assert call.image_mime_types == ["image/png", "image/jpeg", "image/png"]
    assert call.images == [first, second, third]
    # Past the model's limit (3 for gemini-2.5-flash-image) nothing is sent upstream.
    too_many = await api.generate(key, prompt="merge", referenceImageUrls=[*refs, refs[0]])
    assert too_many.status_code == 400
    assert "at most 3" in too_many.json()["error"]
    assert fake.call_count == 1
    assert await api.ledger_sum(key) == await api.balance(key) == 7


async def test_aspect_ratio_and_image_size_are_passed_through(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=10)
    body = (
        await api.generate(key, prompt="wide", selectedModel="nano-banana-2", aspectRatio="16:9")
    ).json()
    [url] = body["imageUrls"]
    assert (await image_of(api, url)).size == (2688, 1536)  # 2K at 16:9
    body = (await api.generate(key, prompt="tall", aspectRatio="9:16")).json()
    assert body["success"] is True
    first, second = fake.calls
    assert (first.model, first.aspect_ratio, first.image_size) == (
        "gemini-3.1-flash-image-preview",
        "16:9",
        "2K",
    )
    assert (second.model, second.aspect_ratio, second.image_size) == (MODEL, "9:16", None)


async def test_quantity_makes_parallel_calls_within_the_concurrency_bound(
    api_factory: ApiFactory, fake: FakeGemini, catalog: Path
) -> None:
    api = await gemini_api(api_factory, fake, catalog, gemini_concurrency=2)
    fake.overlap_target = 3  # each call waits (bounded) for a third one in flight
    fake.script("overlap", "overlap", "overlap")
    key = await api.account(credits=10)
    response = await api.generate(key, prompt="three bananas", quantity=3, seed=41)
    body = response.json()
    assert body["success"] is True
    assert body["creditsUsed"] == 3
    assert len(body["imageUrls"]) == 3
    contents = [(await api.download(url)).content for url in body["imageUrls"]]
    assert len(set(contents)) == 3
    assert fake.call_count == 3
    assert fake.max_in_flight == 2  # parallel, and never past gemini_concurrency
    assert sorted(call.seed for call in fake.calls) == [41, 42, 43]
    assert await api.ledger_sum(key) == await api.balance(key) == 7


async def test_the_concurrency_bound_is_shared_across_requests(
    fake: FakeGemini, tmp_path: Path
) -> None:
    provider = gemini_provider(fake, tmp_path, gemini_concurrency=2)
    fake.overlap_target = 4
    fake.script(*["overlap"] * 4)
    try:
        results = await asyncio.gather(
            provider.generate(image_request(quantity=2), ignore_progress),
            provider.generate(image_request(quantity=2, seed=100), ignore_progress),
        )
    finally:
        await provider.aclose()
    assert [len(r.images) for r in results] == [2, 2]
    assert fake.max_in_flight == 2


# --- safety -----------------------------------------------------------------------------
@pytest.mark.parametrize("behaviour", ["safety", "prompt_blocked"])
async def test_safety_verdicts_are_the_contract_warning(
    api: Api, fake: FakeGemini, behaviour: str
) -> None:
    key = await api.account(credits=5)
    fake.script(behaviour)
    response = await api.generate(key, prompt="something Gemini will not draw")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "success": False,
        "warning": True,
        "generationId": body["generationId"],
        "message": "Content safety check failed",
        "creditsUsed": 1,
        "remainingCredits": 4,
    }
    data = await api.poll(key, body["generationId"])
    assert data["processingStatus"] == "completed"
    assert data["outputImageUrls"] == []
    assert data["warning"] is True
    assert fake.call_count == 1  # a verdict is not retried
    await assert_slot_free_and_books_balanced(api, key)


# --- failures -----------------------------------------------------------------------------
async def test_text_only_answer_fails_clearly_and_is_refunded(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=5)
    fake.script("text_only")
    message = await assert_failed_and_refunded(
        api, key, await api.generate(key, prompt="draw"), credits=5
    )
    prefix = "Gemini answered with text and no image: I can't make that picture"
    assert message.startswith(prefix)
    assert len(message) <= len("Gemini answered with text and no image: ") + 200
    await assert_slot_free_and_books_balanced(api, key)


async def test_no_image_finish_reason_is_a_failure_not_a_safety_verdict(
    api: Api, fake: FakeGemini
) -> None:
    key = await api.account(credits=5)
    fake.script("no_image")
    message = await assert_failed_and_refunded(
        api, key, await api.generate(key, prompt="draw"), credits=5
    )
    assert message == "Gemini returned no image (finish reason NO_IMAGE)"
    await assert_slot_free_and_books_balanced(api, key)


async def test_rate_limit_waits_for_retry_info_then_succeeds(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=5)
    fake.script("429:0.3s", "ok")
    body = (await api.generate(key, prompt="banana")).json()
    assert body["success"] is True
    assert len(body["imageUrls"]) == 1
    first, second = fake.calls
    # The backoff is 0.01 s: only the RetryInfo delay explains this gap.
    assert second.started_at - first.started_at >= 0.3
    assert await api.ledger_sum(key) == await api.balance(key) == 4


async def test_overload_is_retried_up_to_the_limit_then_fails(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=5)
    message = await assert_failed_and_refunded(
        api, key, await api.generate(key, prompt="banana fake:503"), credits=5
    )
    assert message == "Gemini is overloaded (503 UNAVAILABLE); gave up after 3 tries"
    assert fake.call_count == 3  # upstream_max_attempts
    await assert_slot_free_and_books_balanced(api, key)


async def test_server_errors_and_dropped_connections_are_retried(
    api: Api, fake: FakeGemini
) -> None:
    key = await api.account(credits=5)
    fake.script("500", "drop", "ok")
    body = (await api.generate(key, prompt="banana")).json()
    assert body["success"] is True
    assert [call.behaviour for call in fake.calls] == ["500", "drop", "ok"]


async def test_bad_request_is_not_retried(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=5)
    fake.script("400")
    message = await assert_failed_and_refunded(
        api, key, await api.generate(key, prompt="banana"), credits=5
    )
    assert message == (
        "Gemini rejected the request (400 INVALID_ARGUMENT): "
        "Request contains an invalid argument: imageSize 9K."
    )
    assert fake.call_count == 1
    await assert_slot_free_and_books_balanced(api, key)


async def test_a_retry_that_would_pass_the_deadline_is_not_waited_for(
    api: Api, fake: FakeGemini
) -> None:
    key = await api.account(credits=5)
    fake.script("429:47s")  # the model's timeout is 10 s
    started = time.monotonic()
    message = await assert_failed_and_refunded(
        api, key, await api.generate(key, prompt="banana"), credits=5
    )
    assert time.monotonic() - started < 5
    assert message.startswith("Gemini rate limit (429 RESOURCE_EXHAUSTED); gave up after 1 try")
    assert "timeout" in message
    assert fake.call_count == 1
    await assert_slot_free_and_books_balanced(api, key)


async def test_past_the_model_timeout_it_fails_and_is_refunded(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=5)
    fake.script("slow")
    response = await api.generate(key, prompt="banana", selectedModel="nano-banana-slow")
    message = await assert_failed_and_refunded(api, key, response, credits=5)
    assert message == "Generation timed out after 0.5 seconds"
    await assert_slot_free_and_books_balanced(api, key)


async def test_malformed_answer_fails_and_is_refunded(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=5)
    fake.script("malformed")
    message = await assert_failed_and_refunded(
        api, key, await api.generate(key, prompt="banana"), credits=5
    )
    assert message == "Gemini sent an answer that could not be read"
    assert fake.call_count == 1
    await assert_slot_free_and_books_balanced(api, key)


async def test_one_failed_call_of_three_is_a_partial_refund(api: Api, fake: FakeGemini) -> None:
    key = await api.account(credits=10)
    fake.script("ok", "400", "ok")
    response = await api.generate(key, prompt="bananas", quantity=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert len(body["imageUrls"]) == 2
    assert body["creditsUsed"] == 2
    assert body["remainingCredits"] == 8
    data = await api.poll(key, body["generationId"])
    assert data["processingStatus"] == "completed"
    assert data["creditsUsed"] == 2
    assert "of 3: Gemini rejected the request (400 INVALID_ARGUMENT)" in data["errorMessage"]
    assert fake.call_count == 3
    await assert_slot_free_and_books_balanced(api, key)


# --- progress ------------------------------------------------------------------------------
async def test_stream_mode_shows_the_gemini_stages(api: Api) -> None:
    key = await api.account(credits=5)
    response = await api.client.post(
        "/api/v1/generate", json={"prompt": "banana", "mode": "stream"}, headers=key.headers
    )
    assert response.status_code == 200
    events, _ = parse_sse(response.text)
    messages = [event["message"] for event in events]
    stages = [
        "Accepted by nano-banana; sending to Gemini",
        f"Sent to Gemini ({MODEL})",
        "Received image 1 of 1",
    ]
    assert [m for m in messages if m in stages] == stages
    progress = [event["progress"] for event in events]
    assert progress == sorted(progress)
    assert events[-1]["type"] == "complete"
    assert events[-1]["data"]["success"] is True


async def test_progress_ticks_while_waiting_and_never_goes_back(
    fake: FakeGemini, tmp_path: Path
) -> None:
    provider = gemini_provider(fake, tmp_path)
    provider.tick_seconds = 0.01
    seen: list[tuple[float, str]] = []
    ticked = asyncio.Event()

    async def progress(fraction: float, message: str) -> None:
        seen.append((fraction, message))
        if sum(m.startswith("Waiting for Gemini… ") for _, m in seen) >= 3:
            ticked.set()

    fake.script("503", "slow")
    try:
        task = asyncio.create_task(provider.generate(image_request(model="banana-pro"), progress))
        await asyncio.wait_for(ticked.wait(), timeout=10)
        fake.release()
        result = await task
    finally:
        await provider.aclose()
    assert len(result.images) == 1
    messages = [m for _, m in seen]
    assert messages[:2] == [
        "Accepted by banana-pro; sending to Gemini",  # the model the client asked for
        f"Sent to Gemini ({MODEL})",
    ]
    assert any(
        m.startswith("Gemini busy (503), retrying in ") and m.endswith("(try 2 of 3)")
        for m in messages
    )
    assert messages[-1] == "Received image 1 of 1"
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    waiting = [f for f, m in seen if m.startswith("Waiting for Gemini")]
    assert all(0.1 <= f < 0.8 for f in waiting)


# --- the key ---------------------------------------------------------------------------------
async def test_the_api_key_never_leaks(
    api_factory: ApiFactory, fake: FakeGemini, catalog: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = await gemini_api(api_factory, fake, catalog)
    key = await api.account(credits=5)
    fake.script("400:echo")  # an upstream message that quotes the key
    response = await api.generate(key, prompt="banana")
    message = await assert_failed_and_refunded(api, key, response, credits=5)
    assert message.startswith(
        "Gemini rejected the request (400 INVALID_ARGUMENT): API key not valid: ***"
    )
    record = await api.poll(key, response.json()["generationId"])
    assert fake.calls[0].api_key == KEY  # it was sent upstream, and only there
    assert KEY not in response.text
    assert KEY not in json.dumps(record)
    assert KEY not in caplog.text
    assert KEY not in repr(api.services.providers["gemini"])


async def test_a_key_gemini_refuses_fails_the_generation(
    api_factory: ApiFactory, fake: FakeGemini, catalog: Path
) -> None:
    api = await gemini_api(api_factory, fake, catalog, gemini_api_key="AIza-not-the-right-key")
    key = await api.account(credits=5)
    message = await assert_failed_and_refunded(
        api, key, await api.generate(key, prompt="banana"), credits=5
    )
    assert message.startswith("Gemini refused this server's API key (403 PERMISSION_DENIED)")
    assert "AIza-not-the-right-key" not in message
    assert fake.call_count == 0  # the fake records only calls with the right key


# --- without a key ----------------------------------------------------------------------------
async def test_without_a_key_the_gemini_models_are_not_offered(
    api_factory: ApiFactory, catalog: Path
) -> None:
    api = await api_factory(catalog_path=catalog)
    models = (await api.client.get("/api/v1/models")).json()["data"]
    assert models == []
    key = await api.account(credits=5)
    response = await api.generate(key, prompt="banana", selectedModel="nano-banana")
    assert response.status_code == 400
    assert "no API key (set BANANASTAND_GEMINI_API_KEY)" in response.json()["error"]
    assert await api.balance(key) == 5


async def test_default_catalogue_serves_nano_banana_from_gemini_only_with_a_key(
    api_factory: ApiFactory, fake: FakeGemini
) -> None:
    async def backend_of_nano_banana(api: Api) -> str:
        models = (await api.client.get("/api/v1/models")).json()["data"]
        return next(m["backend"] for m in models if m["name"] == "nano-banana")

    assert await backend_of_nano_banana(await api_factory()) == "builtin"
    with_key = await api_factory(gemini_api_key=KEY, gemini_base_url=fake.url)
    assert await backend_of_nano_banana(with_key) == "gemini"


# --- units: parsing, errors, policy -------------------------------------------------------------
def response_of(payload: dict[str, Any]) -> types.GenerateContentResponse:
    return types.GenerateContentResponse.model_validate(payload)


def test_parse_response_outcomes() -> None:
    draft = {"inline_data": {"mime_type": "image/png", "data": b"draft"}, "thought": True}
    final = {"inline_data": {"mime_type": "image/jpeg", "data": b"final"}}
    made = parse_response(
        response_of({"candidates": [{"content": {"parts": [draft, {"text": "hi"}, final]}}]})
    )
    assert made == Made(GeneratedImage(b"final", "image/jpeg"))
    only_draft = response_of(
        {"candidates": [{"content": {"parts": [draft]}, "finish_reason": "STOP"}]}
    )
    assert parse_response(only_draft) == Failed("Gemini returned no image (finish reason STOP)")
    for reason in ("IMAGE_SAFETY", "PROHIBITED_CONTENT", "SPII", "RECITATION"):
        assert parse_response(response_of({"candidates": [{"finish_reason": reason}]})) == Blocked(
            reason
        )
    for reason in ("IMAGE_OTHER", "OTHER", "NO_IMAGE"):
        outcome = parse_response(response_of({"candidates": [{"finish_reason": reason}]}))
        assert outcome == Failed(f"Gemini returned no image (finish reason {reason})")
    blocked = response_of({"prompt_feedback": {"block_reason": "PROHIBITED_CONTENT"}})
    assert parse_response(blocked) == Blocked("prompt blocked: PROHIBITED_CONTENT")
    assert parse_response(response_of({})) == Failed("Gemini answered with no result")


def test_retry_delay_reads_retry_info() -> None:
    def error(details: list[dict[str, Any]]) -> errors.APIError:
        body = {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "m",
                "details": details,
            }
        }
        return errors.ClientError(429, body)

    info = "type.googleapis.com/google.rpc.RetryInfo"
    assert retry_delay(error([{"@type": info, "retryDelay": "47s"}])) == 47
    assert retry_delay(error([{"@type": info, "retryDelay": "1.5s"}])) == 1.5
    assert (
        retry_delay(error([{"@type": info, "retryDelay": {"seconds": 2, "nanos": 500000000}}]))
        == 2.5
    )
    assert retry_delay(error([{"@type": "type.googleapis.com/google.rpc.Help", "links": []}])) == 0
    assert retry_delay(error([])) == 0


def test_error_descriptions_are_clear_and_safe() -> None:
    def error(code: int, status: str, message: str) -> errors.APIError:
        cls = errors.ClientError if code < 500 else errors.ServerError
        return cls(code, {"error": {"code": code, "status": status, "message": message}})

    assert describe_api_error(error(503, "UNAVAILABLE", "overloaded")) == (
        "Gemini is overloaded (503 UNAVAILABLE)"
    )
    assert describe_api_error(error(429, "RESOURCE_EXHAUSTED", "quota")) == (
        "Gemini rate limit (429 RESOURCE_EXHAUSTED)"
    )
    assert describe_api_error(error(504, "DEADLINE_EXCEEDED", "slow")) == (
        "Gemini server error (504 DEADLINE_EXCEEDED)"
    )
    long = describe_api_error(error(400, "INVALID_ARGUMENT", "x" * 1000 + " secret"), "secret")
    assert long == "Gemini rejected the request (400 INVALID_ARGUMENT): " + "x" * 300
    assert describe_api_error(error(404, "NOT_FOUND", "no model secret"), "secret") == (
        "Gemini does not know this model (404 NOT_FOUND): no model ***"
    )


def test_outcome_policy() -> None:
    image = GeneratedImage(b"png")
    partial = settle([Made(image), Blocked("IMAGE_SAFETY"), Failed("boom")], upstream="Gemini")
    assert partial.images == [image]
    assert partial.safety_message is None
    assert partial.errors == [
        "image 2 of 3: blocked by Gemini's safety filter (IMAGE_SAFETY)",
        "image 3 of 3: boom",
    ]
    verdict = settle([Failed("boom"), Blocked("SAFETY")], upstream="Gemini")
    assert (verdict.images, verdict.safety_message) == ([], SAFETY_MESSAGE)
    with pytest.raises(ProviderError, match=r"^boom; bang$"):
        settle([Failed("boom"), Failed("bang"), Failed("boom")], upstream="Gemini")


def test_no_key_makes_the_backend_unusable(tmp_path: Path) -> None:
    from bananastand.providers import Unusable

    with pytest.raises(Unusable, match=r"no API key \(set BANANASTAND_GEMINI_API_KEY\)"):
        create(make_settings(tmp_path), [])


# --- direct provider helpers --------------------------------------------------------------------
def gemini_provider(fake: FakeGemini, tmp_path: Path, **overrides: Any) -> GeminiProvider:
    values: dict[str, Any] = {
        "gemini_api_key": KEY,
        "gemini_base_url": fake.url,
        "upstream_backoff_seconds": 0.01,
        "upstream_max_attempts": 3,
    }
    values.update(overrides)
    return create(make_settings(tmp_path, **values), [])


def image_request(quantity: int = 1, seed: int = 7, model: str = "nano-banana") -> ImageRequest:
    return ImageRequest(
        prompt="a banana",
        backend_model=MODEL,
        model=model,
        quantity=quantity,
        seed=seed,
        references=(ReferenceImage(png_bytes(), "image/png", 64, 48),),
        deadline=time.monotonic() + 30,
    )


async def ignore_progress(fraction: float, message: str) -> None:
    return None
