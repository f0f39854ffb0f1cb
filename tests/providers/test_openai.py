"""The OpenAI image backend, through the whole app, against a fake OpenAI server.

The fake (`tests.fakes.openai_server`) is a real HTTP server speaking OpenAI's
wire format; the backend reaches it through the official `openai` SDK, so
these tests cover the SDK's real requests, errors and stream parsing.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from bananastand.providers.openai_images import OpenAIImagesProvider, size_for_ratio
from tests.fakes.openai_server import (
    FakeOpenAI,
    fewer,
    hold,
    invalid,
    malformed,
    moderation_blocked,
    ok,
    rate_limited,
    server_error,
    slow,
    stream_error,
)
from tests.support import Api, ApiFactory, Key, data_url, parse_sse, png_bytes, wait_until

KEY = "sk-test-bananastand-7f3a9c2e51"
MODEL = "gpt-image-1"
WEBP = "gpt-image-1-webp"
LIVE = "gpt-image-1-live"  # streams partial images
QUICK = "gpt-image-1-quick"  # a short model timeout
QUICK_TIMEOUT = 1.3
ATTEMPTS = 3

CATALOG = """
[[models]]
name = "{name}"
displayName = "GPT Image ({name})"
backend = "openai"
backendModel = "gpt-image-1"
creditsCost = 3
extraImageCost = 1
supportsImageInput = true
supportsAspectRatio = true
aspectRatios = ["1:1", "3:2", "2:3", "16:9", "9:16"]
maxQuantity = 4
maxReferenceImages = 16
timeoutSeconds = {timeout}

[models.options]
{options}
"""


def write_catalog(folder: Path) -> Path:
    entries = [
        (MODEL, 240, 'quality = "auto"\noutputFormat = "png"'),
        (WEBP, 240, 'quality = "high"\noutputFormat = "webp"'),
        (LIVE, 240, 'quality = "low"\noutputFormat = "png"\npartialImages = 2'),
        (QUICK, QUICK_TIMEOUT, 'outputFormat = "png"'),
    ]
    path = folder / "catalog.toml"
    path.write_text(
        "".join(
            CATALOG.format(name=name, timeout=timeout, options=options)
            for name, timeout, options in entries
        )
    )
    return path


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


async def build(api_factory: ApiFactory, tmp_path: Path, base_url: str, **overrides: Any) -> Api:
    settings: dict[str, Any] = {
        "catalog_path": write_catalog(tmp_path),
        "openai_api_key": KEY,
        "openai_base_url": base_url,
        "upstream_backoff_seconds": 0.01,
        "upstream_max_attempts": ATTEMPTS,
    }
    settings.update(overrides)
    api: Api = await api_factory(**settings)
    return api


@pytest.fixture
async def api(api_factory: ApiFactory, tmp_path: Path, fake: FakeOpenAI) -> Api:
    return await build(api_factory, tmp_path, fake.url + "/v1")


async def ask(api: Api, key: Key, model: str = MODEL, **body: Any) -> Any:
    body.setdefault("prompt", "a banana stand at noon")
    return await api.generate(key, selectedModel=model, **body)


async def assert_slot_free_and_books_balance(api: Api, key: Key, fake: FakeOpenAI) -> None:
    """After any outcome, the account's single slot is free and its ledger adds up."""
    fake.always(ok())
    follow_up = await ask(api, key, prompt="follow-up")
    assert follow_up.status_code == 200, follow_up.text
    assert await api.ledger_sum(key) == await api.balance(key)


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in events if e["type"] == "status"]


# --- pure helpers -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("1:1", "1024x1024"),
        ("3:2", "1536x1024"),
        ("4:3", "1536x1024"),
        ("5:4", "1536x1024"),
        ("16:9", "1536x1024"),
        ("21:9", "1536x1024"),
        ("2:3", "1024x1536"),
        ("3:4", "1024x1536"),
        ("4:5", "1024x1536"),
        ("9:16", "1024x1536"),
        (None, "auto"),
    ],
)
def test_aspect_ratios_map_to_the_three_gpt_image_sizes(ratio: str | None, size: str) -> None:
    assert size_for_ratio(ratio) == size


# --- text-to-image ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ratio", "size", "pixels"),
    [
        ("1:1", "1024x1024", (1024, 1024)),
        ("3:2", "1536x1024", (1536, 1024)),
        ("16:9", "1536x1024", (1536, 1024)),
        ("9:16", "1024x1536", (1024, 1536)),
        ("default", "auto", (1024, 1024)),
    ],
)
async def test_text_to_image_sends_n_and_size_and_stores_the_images(
    api: Api, fake: FakeOpenAI, ratio: str, size: str, pixels: tuple[int, int]
) -> None:
    key = await api.account(credits=20)
    response = await ask(api, key, prompt="a lighthouse", aspectRatio=ratio, quantity=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["creditsUsed"] == 6
    assert body["remainingCredits"] == 14
    [call] = fake.requests
    assert call.endpoint == "generations"
    assert (call.model, call.n, call.size) == ("gpt-image-1", 2, size)
    assert (call.quality, call.output_format, call.stream) == ("auto", "png", False)
    assert call.fields["prompt"] == "a lighthouse"
    contents = []
    for url in body["imageUrls"]:
        image = await api.download(url)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == pixels
        contents.append(image.content)
    assert len(set(contents)) == 2  # both images, not one twice


async def test_catalogue_options_choose_quality_and_output_format(
    api: Api, fake: FakeOpenAI
) -> None:
    key = await api.account(credits=10)
    body = (await ask(api, key, WEBP, aspectRatio="2:3")).json()
    assert body["success"] is True, body
    [call] = fake.requests
    assert (call.quality, call.output_format, call.size) == ("high", "webp", "1024x1536")
    image = await api.download(body["imageUrls"][0])
    assert image.headers["content-type"] == "image/webp"
    assert body["imageUrls"][0].split("?")[0].endswith(".webp")
    assert Image.open(io.BytesIO(image.content)).format == "WEBP"


async def test_requests_come_from_the_official_sdk_with_its_retries_off(
    api: Api, fake: FakeOpenAI
) -> None:
    provider = api.services.providers["openai"]
    assert isinstance(provider, OpenAIImagesProvider)
    assert isinstance(provider.client, openai.AsyncOpenAI)
    assert provider.client.max_retries == 0
    assert str(provider.client.base_url) == fake.url + "/v1/"
    key = await api.account()
    assert (await ask(api, key)).status_code == 200
    [call] = fake.requests
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert call.headers["content-type"] == "application/json"


# --- image-to-image ---------------------------------------------------------------------
async def test_image_to_image_sends_every_reference_as_multipart(
    api: Api, fake: FakeOpenAI
) -> None:
    key = await api.account(credits=20)
    references = [png_bytes((60, 40), (200, 0, 0)), png_bytes((30, 30), (0, 0, 200))]
    jpeg = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 150, 0)).save(jpeg, "JPEG")
    urls = [data_url(r) for r in references] + [data_url(jpeg.getvalue(), "image/jpeg")]
    response = await ask(api, key, prompt="make it blue", referenceImageUrls=urls, quantity=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["creditsUsed"] == 2 * (3 + 2)  # two images, two extra references
    assert len(body["imageUrls"]) == 2
    [call] = fake.requests
    assert call.endpoint == "edits"
    assert call.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert [field for field, *_ in call.images] == ["image[]", "image[]", "image[]"]
    assert [mime for *_, mime, _ in call.images] == ["image/png", "image/png", "image/jpeg"]
    assert [data for *_, data in call.images] == [*references, jpeg.getvalue()]
    assert call.fields["prompt"] == "make it blue"
    assert (call.model, call.n, call.size, call.quality) == ("gpt-image-1", 2, "auto", "auto")
    image = await api.download(body["imageUrls"][0])
    assert Image.open(io.BytesIO(image.content)).size == (1024, 1024)


# --- streaming partial images -----------------------------------------------------------
async def test_partial_images_become_progress_stages(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=20)
    response = await ask(api, key, LIVE, mode="stream", quantity=2, aspectRatio="3:2")
    assert response.status_code == 200
    events, _ = parse_sse(response.text)
    messages = statuses(events)
    assert messages.index("Sending to OpenAI (gpt-image-1)") < messages.index(
        "Image 1 of 2: partial image 1 of 2"
    )
    for image in (1, 2):
        for partial in (1, 2):
            assert f"Image {image} of 2: partial image {partial} of 2" in messages
    assert "Received 2 images" in messages
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    final = events[-1]
    assert final["type"] == "complete"
    assert final["data"]["success"] is True
    assert final["data"]["creditsUsed"] == 6
    # one streamed call per image, each asking for the partial images
    assert len(fake.requests) == 2
    for call in fake.requests:
        assert (call.stream, call.partial_images, call.n) == (True, 2, 1)
        assert (call.size, call.quality) == ("1536x1024", "low")
    for url in final["data"]["imageUrls"]:
        image = Image.open(io.BytesIO((await api.download(url)).content))
        assert image.size == (1536, 1024)
        assert image.getpixel((0, 0)) == (220, 40, 40)  # the final image, not a draft


async def test_partial_images_while_editing(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=20)
    response = await ask(api, key, LIVE, mode="stream", referenceImageUrls=[data_url(png_bytes())])
    events, _ = parse_sse(response.text)
    messages = statuses(events)
    assert "Partial image 1 of 2" in messages
    assert "Partial image 2 of 2" in messages
    assert "Received 1 image" in messages
    assert events[-1]["type"] == "complete"
    assert events[-1]["data"]["success"] is True
    [call] = fake.requests
    assert (call.endpoint, call.stream, len(call.images)) == ("edits", True, 1)


async def test_partial_images_are_the_stream_previews(
    api_factory: ApiFactory, tmp_path: Path, fake: FakeOpenAI
) -> None:
    api = await build(
        api_factory, tmp_path, fake.url + "/v1", preview_max_side=128, preview_format="webp"
    )
    key = await api.account(credits=20)
    response = await ask(api, key, LIVE, mode="stream", quantity=2, aspectRatio="3:2")
    events, _ = parse_sse(response.text)
    previews = {
        e["message"]: e["data"]["previewImage"]
        for e in events
        if e["type"] == "status" and "data" in e
    }
    assert set(previews) == {
        f"Image {image} of 2: partial image {partial} of 2"
        for image in (1, 2)
        for partial in (1, 2)
    }
    for message, url in previews.items():
        assert url.startswith("data:image/webp;base64,")
        preview = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert preview.format == "WEBP"
        assert preview.size == (128, 85)  # 1536x1024, shrunk to 128 px on its longest side
        # The fake's partial image n is the final colour divided by n + 1.
        partial = int(message[-len("1 of 2") :][0])
        expected = tuple(c // (partial + 1) for c in (220, 40, 40))
        actual = preview.convert("RGB").getpixel((64, 42))
        assert all(abs(a - b) <= 8 for a, b in zip(actual, expected, strict=True)), (
            message,
            actual,
        )
    assert events[-1]["type"] == "complete"
    assert "data" not in events[-2]  # "Received 2 images": no preview

    # Turned off by the client: the same upstream calls, no previews on the stream.
    response = await ask(api, key, LIVE, mode="stream", previews=False)
    events, _ = parse_sse(response.text)
    assert all("data" not in e for e in events if e["type"] == "status")
    assert "Partial image 2 of 2" in statuses(events)
    assert fake.requests[-1].partial_images == 2


async def test_an_error_event_inside_a_stream_is_retried(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=20)
    fake.script(stream_error())
    response = await ask(api, key, LIVE, mode="stream")
    events, _ = parse_sse(response.text)
    assert any(m.startswith("OpenAI busy (stream error), retrying in") for m in statuses(events))
    assert events[-1]["type"] == "complete"
    assert events[-1]["data"]["success"] is True
    assert len(fake.requests) == 2


# --- safety -------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [MODEL, LIVE])
async def test_moderation_block_is_the_contract_warning(
    api: Api, fake: FakeOpenAI, model: str
) -> None:
    key = await api.account(credits=10)
    fake.script(moderation_blocked())
    response = await ask(api, key, model, prompt="something not allowed")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "success": False,
        "warning": True,
        "generationId": body["generationId"],
        "message": "Content safety check failed",
        "creditsUsed": 3,
        "remainingCredits": 7,
    }
    assert len(fake.requests) == 1  # a verdict is not retried
    data = await api.poll(key, body["generationId"])
    assert data["processingStatus"] == "completed"
    assert data["outputImageUrls"] == []
    await assert_slot_free_and_books_balance(api, key, fake)


# --- retries --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "wait"),
    [({}, "0.0 s"), ({"retry_after": "0.3"}, "0.3 s"), ({"retry_after_ms": "400"}, "0.4 s")],
)
async def test_rate_limit_is_retried_honouring_retry_after(
    api: Api, fake: FakeOpenAI, headers: dict[str, str], wait: str
) -> None:
    key = await api.account(credits=10)
    fake.script(rate_limited(**headers))
    response = await ask(api, key, mode="stream")
    events, _ = parse_sse(response.text)
    assert f"OpenAI busy (429), retrying in {wait} (try 2 of {ATTEMPTS})" in statuses(events)
    assert events[-1]["type"] == "complete"
    assert events[-1]["data"]["success"] is True
    assert len(events[-1]["data"]["imageUrls"]) == 1
    assert len(fake.requests) == 2
    assert await api.balance(key) == 7


async def test_a_retry_after_beyond_the_deadline_gives_up_at_once(
    api: Api, fake: FakeOpenAI
) -> None:
    key = await api.account(credits=10)
    fake.script(rate_limited(retry_after="600"))  # the model's timeout is 240 s
    response = await ask(api, key)
    assert response.status_code == 502
    assert response.json()["error"] == (
        "OpenAI rate limit (429); gave up after 1 try (no time left to retry)"
    )
    assert len(fake.requests) == 1
    await assert_slot_free_and_books_balance(api, key, fake)


async def test_server_errors_are_retried_then_fail_and_refund(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=10)
    fake.always(server_error(500))
    response = await ask(api, key, quantity=2)
    assert response.status_code == 502
    body = response.json()
    assert body["success"] is False
    assert body["error"] == f"OpenAI server error (500); gave up after {ATTEMPTS} tries"
    assert body["creditsUsed"] == 0
    assert body["remainingCredits"] == 10
    assert len(fake.requests) == api.services.settings.upstream_max_attempts == ATTEMPTS
    data = await api.poll(key, body["generationId"])
    assert data["processingStatus"] == "failed"
    assert data["errorMessage"] == body["error"]
    await assert_slot_free_and_books_balance(api, key, fake)


async def test_an_unreachable_openai_is_retried_then_fails(
    api_factory: ApiFactory, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    api = await build(api_factory, tmp_path, f"http://127.0.0.1:{port}/v1")
    key = await api.account(credits=10)
    response = await ask(api, key)
    assert response.status_code == 502
    assert response.json()["error"] == (f"Could not reach OpenAI; gave up after {ATTEMPTS} tries")
    assert await api.balance(key) == 10
    assert await api.ledger_sum(key) == 10


# --- failures that are not retried ---------------------------------------------------------
async def test_a_bad_request_fails_at_once_with_openais_reason(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=10)
    fake.script(invalid("Invalid value: 'ultra'. Supported values are: 'low', 'medium'."))
    response = await ask(api, key)
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == (
        "OpenAI rejected the request (400 invalid_request_error): "
        "Invalid value: 'ultra'. Supported values are: 'low', 'medium'."
    )
    assert body["remainingCredits"] == 10
    assert len(fake.requests) == 1
    await assert_slot_free_and_books_balance(api, key, fake)


async def test_upstream_text_is_bounded_and_never_carries_the_key(
    api: Api, fake: FakeOpenAI
) -> None:
    key = await api.account(credits=10)
    fake.script(invalid(f"Key {KEY} is not allowed\nhere. " + "blah " * 400))
    body = (await ask(api, key)).json()
    error = body["error"]
    assert error.startswith("OpenAI rejected the request (400 invalid_request_error): Key ")
    assert "[redacted] is not allowed here." in error
    assert KEY not in error
    assert "\n" not in error
    assert len(error) <= len("OpenAI rejected the request (400 invalid_request_error): ") + 300
    assert error.endswith("…")


async def test_a_refused_key_fails_without_retrying_or_echoing_it(
    api_factory: ApiFactory, tmp_path: Path, fake: FakeOpenAI
) -> None:
    wrong = "sk-wrong-0123456789"
    api = await build(api_factory, tmp_path, fake.url + "/v1", openai_api_key=wrong)
    key = await api.account(credits=10)
    response = await ask(api, key)
    assert response.status_code == 502
    assert response.json()["error"].startswith(
        "OpenAI refused this server's credentials (401 invalid_api_key)"
    )
    assert wrong not in response.text
    assert len(fake.requests) == 1
    assert fake.requests[0].authorized is False
    assert await api.balance(key) == 10
    assert await api.ledger_sum(key) == 10


async def test_a_malformed_answer_fails_and_refunds(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=10)
    fake.script(malformed())
    response = await ask(api, key)
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "OpenAI sent an answer that could not be read"
    assert body["creditsUsed"] == 0
    assert "Traceback" not in response.text
    assert len(fake.requests) == 1
    await assert_slot_free_and_books_balance(api, key, fake)


async def test_an_answer_without_images_fails(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=10)
    fake.script(fewer(0))
    response = await ask(api, key, quantity=2)
    assert response.status_code == 502
    assert response.json()["error"] == "OpenAI returned no images"
    await assert_slot_free_and_books_balance(api, key, fake)


async def test_fewer_images_than_asked_refunds_the_rest(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=20)
    fake.script(fewer(1))
    response = await ask(api, key, quantity=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["imageUrls"]) == 1
    assert body["creditsUsed"] == 3  # one image at 3 credits
    assert body["remainingCredits"] == 17
    data = await api.poll(key, body["generationId"])
    assert data["creditsUsed"] == 3
    assert "OpenAI returned 1 of 3 images" in data["errorMessage"]
    assert fake.requests[0].n == 3
    await assert_slot_free_and_books_balance(api, key, fake)


async def test_a_slow_openai_times_out_and_refunds(api: Api, fake: FakeOpenAI) -> None:
    key = await api.account(credits=10)
    fake.script(slow(60))
    response = await ask(api, key, QUICK, mode="stream")
    events, _ = parse_sse(response.text)
    # while waiting, the ticker said so, at least once before the timeout
    assert "Waiting for OpenAI… 1 s" in statuses(events)
    final = events[-1]
    assert final["type"] == "error"
    assert final["data"]["error"] == f"Generation timed out after {QUICK_TIMEOUT:g} seconds"
    assert final["data"]["creditsUsed"] == 0
    assert await api.balance(key) == 10
    assert await api.ledger_sum(key) == 10
    assert api.services.providers["openai"].in_flight == 0  # type: ignore[attr-defined]
    await assert_slot_free_and_books_balance(api, key, fake)


# --- concurrency ----------------------------------------------------------------------------
async def test_calls_in_flight_are_bounded_across_requests(
    api_factory: ApiFactory, tmp_path: Path, fake: FakeOpenAI
) -> None:
    api = await build(api_factory, tmp_path, fake.url + "/v1", openai_concurrency=1)
    provider = api.services.providers["openai"]
    assert isinstance(provider, OpenAIImagesProvider)
    alice, bob = await api.account(), await api.account()
    fake.script(hold())
    first = asyncio.create_task(ask(api, alice))

    async def first_held() -> bool:
        return len(fake.requests) == 1

    await wait_until(first_held)
    second = asyncio.create_task(ask(api, bob))

    async def second_waiting() -> bool:
        return provider.waiting == 1

    await wait_until(second_waiting)
    assert len(fake.requests) == 1  # the second call waits for the slot, not at OpenAI
    assert provider.in_flight == 1
    fake.release()
    responses = await asyncio.gather(first, second)
    assert [r.status_code for r in responses] == [200, 200]
    assert len(fake.requests) == 2
    assert fake.max_in_flight == 1
    assert (provider.in_flight, provider.waiting) == (0, 0)


# --- configuration ---------------------------------------------------------------------------
async def test_without_a_key_the_models_are_not_offered(
    api_factory: ApiFactory, tmp_path: Path, fake: FakeOpenAI
) -> None:
    api = await build(api_factory, tmp_path, fake.url + "/v1", openai_api_key="")
    assert "openai" not in api.services.providers
    listed = (await api.client.get("/api/v1/models")).json()["data"]
    assert MODEL not in [m["name"] for m in listed]
    key = await api.account(credits=10)
    response = await ask(api, key)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "model_unavailable"
    assert "no API key (set BANANASTAND_OPENAI_API_KEY)" in error["error"]
    assert await api.balance(key) == 10
    assert fake.requests == []


async def test_the_key_never_reaches_clients_records_or_logs(
    api: Api, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await api.account(credits=20)
    fake.script(rate_limited(), server_error(503), server_error(503), invalid(f"bad {KEY}"))
    texts = []
    for mode in ("sync", "stream", "sync"):
        response = await ask(api, key, mode=mode)
        texts.append(response.text)
        generation_id = response.headers.get("x-generation-id") or response.json()["generationId"]
        texts.append(str(await api.poll(key, generation_id)))
    texts.append((await api.client.get("/api/v1/models")).text)
    assert len(fake.requests) == ATTEMPTS + 2  # three tries, one refusal, one success
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)
    assert "retrying in" in caplog.text  # the logs were captured, retries included
    assert "OpenAI rejected the request" in caplog.text
    for text in [*texts, caplog.text]:
        assert KEY not in text
        assert KEY[8:] not in text
