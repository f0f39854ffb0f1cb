"""The local diffusers backend, through the whole app, on a tiny random pipeline.

The pipeline (`tests.providers.tiny_pipeline`) is built once per session and
saved to disk; the backend loads it with the real `from_pretrained`, offline.
The batcher is also tested on its own with a fake run function.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

# Skipped, with this reason in the summary, where the `diffusers` extra is not installed.
_NEEDS = "needs torch and diffusers: pip install torch, then -e '.[diffusers]'"
torch = pytest.importorskip("torch", reason=_NEEDS)
pytest.importorskip("diffusers", reason=_NEEDS)

from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image, ImageChops, ImageStat

from bananastand.api import schemas
from bananastand.aspect_ratios import size_for_area
from bananastand.providers import ProviderError, Unusable, diffusers_provider
from bananastand.providers.base import SAFETY_MESSAGE, ReferenceImage
from bananastand.providers.batching import Batcher, BatcherClosed, Job
from bananastand.providers.diffusers_options import (
    IMAGE_TO_IMAGE,
    TEXT_TO_IMAGE,
    Recipe,
    fit_reference,
    locate,
)
from bananastand.providers.diffusers_provider import (
    DiffusersProvider,
    Output,
    collect_results,
    resolve_device,
)
from tests.providers.tiny_pipeline import build_tiny_pipeline
from tests.support import (
    BOTH_DEPLOYMENTS,
    Api,
    ApiFactory,
    Key,
    data_url,
    parse_sse,
    png_bytes,
)

MODEL = "tiny-sd"
QUICK = "tiny-sd-quick"  # a short model timeout
MISSING = "tiny-sd-missing"  # a folder that does not exist
HUB = "tiny-sd-hub"  # a hub id that is not in the local cache
BROKEN = "tiny-sd-broken"  # a folder that is no pipeline: fails at load
STEPS = 2
I2I_STEPS = 6
STRENGTH = 0.5
I2I_RUN = int(I2I_STEPS * STRENGTH)  # steps diffusers actually runs: 3

ENTRY = """
[[models]]
name = "{name}"
displayName = "Tiny SD ({name})"
backend = "diffusers"
backendModel = {backend_model}
creditsCost = 1
extraImageCost = 0
supportsImageInput = true
supportsAspectRatio = true
aspectRatios = ["1:1", "16:9", "9:16"]
maxQuantity = 4
maxReferenceImages = 1
timeoutSeconds = {timeout}

[models.options]
baseSize = 64
steps = {steps}
guidanceScale = 0.0
imageToImageSteps = {i2i_steps}
strength = {strength}
"""


# --- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny pipeline's folder, built once; the hub is off while tests run."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipeline")
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def write_catalog(folder: Path, pipeline: Path) -> Path:
    broken = folder / "broken-weights"
    broken.mkdir(exist_ok=True)
    (broken / "model_index.json").write_text("{}")
    entries = [
        (MODEL, pipeline, 60),
        (QUICK, pipeline, 0.5),
        (MISSING, folder / "no-such-weights", 60),
        (HUB, "bananastand-tests/not-in-the-cache", 60),
        (BROKEN, broken, 60),
    ]
    path = folder / "catalog.toml"
    path.write_text(
        "".join(
            ENTRY.format(
                name=name,
                backend_model=json.dumps(str(backend_model)),
                timeout=timeout,
                steps=STEPS,
                i2i_steps=I2I_STEPS,
                strength=STRENGTH,
            )
            for name, backend_model, timeout in entries
        )
    )
    return path


async def build(api_factory: ApiFactory, tmp_path: Path, pipeline: Path, **overrides: Any) -> Api:
    settings: dict[str, Any] = {
        "catalog_path": write_catalog(tmp_path, pipeline),
        "default_model": MODEL,
        "diffusers_device": "cpu",
        "diffusers_batch_window_ms": 0.0,
    }
    settings.update(overrides)
    return await api_factory(**settings)


@pytest.fixture
async def api(api_factory: ApiFactory, tmp_path: Path, tiny_pipeline: Path) -> Api:
    return await build(api_factory, tmp_path, tiny_pipeline)


def provider_of(api: Api) -> DiffusersProvider:
    provider = api.services.providers["diffusers"]
    assert isinstance(provider, DiffusersProvider)
    return provider


async def images_of(api: Api, body: dict[str, Any]) -> list[bytes]:
    contents = []
    for url in body["imageUrls"]:
        response = await api.download(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        contents.append(response.content)
    return contents


def same_picture(a: bytes, b: bytes) -> bool:
    """Equal up to float rounding: the noise of an image does not depend on its batch,
    but CPU kernels may round differently for another batch size (off by 1 at most)."""
    first, second = Image.open(io.BytesIO(a)), Image.open(io.BytesIO(b))
    if first.size != second.size:
        return False
    difference = ImageChops.difference(first.convert("RGB"), second.convert("RGB"))
    return max(high for _, high in difference.getextrema()) <= 2


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in events if e["type"] == "status"]


async def generate_ok(api: Api, key: Key, **body: Any) -> dict[str, Any]:
    body.setdefault("selectedModel", MODEL)
    response = await api.generate(key, **body)
    assert response.status_code == 200, response.text
    if body.get("mode") == "stream":
        events, _ = parse_sse(response.text)
        assert events[-1]["type"] == "complete", events[-1]
        return {**events[-1]["data"], "events": events}
    return response.json()  # type: ignore[no-any-return]


async def assert_books_balanced(api: Api, key: Key) -> None:
    assert await api.ledger_sum(key) == await api.balance(key)


# --- the catalogue and loading ------------------------------------------------------------
async def test_the_loaded_model_is_offered_as_a_diffusers_model(
    api: Api, tiny_pipeline: Path
) -> None:
    response = await api.client.get("/api/v1/models")
    models = {m["name"]: m for m in response.json()["data"]}
    assert models[MODEL]["backend"] == "diffusers"
    assert models[MODEL]["supportsImageInput"] is True
    assert MISSING not in models and HUB not in models and BROKEN not in models
    # Loaded through the real from_pretrained on the saved folder, kept warm.
    loaded = provider_of(api).loaded[str(tiny_pipeline)]
    assert isinstance(loaded.text2image, StableDiffusionPipeline)
    assert loaded.text2image.config._name_or_path == str(tiny_pipeline)
    assert isinstance(loaded.image2image, StableDiffusionImg2ImgPipeline)
    assert loaded.image2image.unet is loaded.text2image.unet  # weights shared
    assert loaded.text2image.device.type == "cpu"
    assert loaded.text2image.dtype == torch.float32


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (MISSING, "weights not found locally (no such folder)"),
        (HUB, "BANANASTAND_DIFFUSERS_ALLOW_DOWNLOAD=true"),
        (BROKEN, "weights failed to load"),
    ],
)
async def test_a_model_without_usable_weights_is_refused_with_the_reason(
    api: Api, model: str, why: str
) -> None:
    key = await api.account(credits=5)
    response = await api.generate(key, prompt="a cat", selectedModel=model)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "model_unavailable"
    assert why in body["error"]
    assert await api.balance(key) == 5


# --- text-to-image --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ratio", "size"), [("default", (64, 64)), ("16:9", (88, 48)), ("9:16", (48, 88))]
)
async def test_text_to_image_makes_a_png_of_the_expected_size(
    api: Api, ratio: str, size: tuple[int, int]
) -> None:
    key = await api.account(credits=5)
    body = await generate_ok(api, key, prompt="a lighthouse", aspectRatio=ratio, seed=7)
    assert body["creditsUsed"] == 1
    assert body["remainingCredits"] == 4
    [data] = await images_of(api, body)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    assert image.size == size
    assert max(ImageStat.Stat(image.convert("L")).stddev) > 0  # not a blank image
    stats = provider_of(api).stats
    assert stats.pipeline_calls == 1
    assert stats.calls_by_mode[TEXT_TO_IMAGE] == 1
    await assert_books_balanced(api, key)


async def test_the_seed_fixes_the_image(api: Api) -> None:
    key = await api.account(credits=5)
    first = await images_of(api, await generate_ok(api, key, prompt="a fox", seed=11))
    again = await images_of(api, await generate_ok(api, key, prompt="a fox", seed=11))
    other = await images_of(api, await generate_ok(api, key, prompt="a fox", seed=12))
    assert first == again
    assert first != other


async def test_stream_reports_every_denoising_step(api: Api) -> None:
    key = await api.account(credits=5)
    body = await generate_ok(api, key, prompt="a koi pond", mode="stream", seed=3)
    events = body["events"]
    denoising = [m for m in statuses(events) if m.startswith("Denoising")]
    assert denoising == [f"Denoising step {i} of {STEPS}" for i in range(1, STEPS + 1)]
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    last_step = next(e for e in events if e["message"] == f"Denoising step {STEPS} of {STEPS}")
    assert last_step["progress"] == 90  # fraction 1.0 of the backend's 5..90
    assert len(body["imageUrls"]) == 1


async def test_quantity_makes_that_many_distinct_images_in_one_call(api: Api) -> None:
    key = await api.account(credits=5)
    body = await generate_ok(api, key, prompt="a red bicycle", quantity=3, seed=5)
    assert body["creditsUsed"] == 3
    contents = await images_of(api, body)
    assert len(contents) == 3
    assert len(set(contents)) == 3
    stats = provider_of(api).stats
    assert stats.pipeline_calls == 1
    assert stats.images_per_call == {3: 1}


async def test_images_do_not_depend_on_how_they_were_batched(
    api_factory: ApiFactory, tmp_path: Path, tiny_pipeline: Path
) -> None:
    wide = await build(api_factory, tmp_path, tiny_pipeline, diffusers_max_batch=4)
    narrow = await build(api_factory, tmp_path, tiny_pipeline, diffusers_max_batch=2)
    bodies = []
    for app in (wide, narrow):
        key = await app.account(credits=5)
        bodies.append(await generate_ok(app, key, prompt="a kite", quantity=3, seed=21))
    assert provider_of(wide).stats.images_per_call == {3: 1}
    assert provider_of(narrow).stats.images_per_call == {2: 1, 1: 1}  # split in two calls
    wide_images = await images_of(wide, bodies[0])
    narrow_images = await images_of(narrow, bodies[1])
    assert all(map(same_picture, wide_images, narrow_images))
    assert not same_picture(wide_images[0], wide_images[1])


# --- image-to-image ---------------------------------------------------------------------------
async def test_image_to_image_runs_the_img2img_pipeline_on_the_reference(api: Api) -> None:
    key = await api.account(credits=10)
    red = data_url(png_bytes((64, 48), (200, 30, 30)))
    blue = data_url(png_bytes((64, 48), (20, 40, 220)))
    body = await generate_ok(
        api, key, prompt="a cat", mode="stream", seed=9, referenceImageUrls=[red]
    )
    denoising = [m for m in statuses(body["events"]) if m.startswith("Denoising")]
    assert denoising == [f"Denoising step {i} of {I2I_RUN}" for i in range(1, I2I_RUN + 1)]
    [from_red] = await images_of(api, body)
    # No aspect ratio asked: the reference's shape (4:3) at 64x64's area.
    assert Image.open(io.BytesIO(from_red)).size == (72, 56)
    [from_blue] = await images_of(
        api, await generate_ok(api, key, prompt="a cat", seed=9, referenceImageUrls=[blue])
    )
    [text_only] = await images_of(
        api, await generate_ok(api, key, prompt="a cat", seed=9, aspectRatio="default")
    )
    assert from_red != from_blue  # the reference shapes the result
    assert Image.open(io.BytesIO(text_only)).size == (64, 64)
    stats = provider_of(api).stats
    assert stats.calls_by_mode == {IMAGE_TO_IMAGE: 2, TEXT_TO_IMAGE: 1}


async def test_image_to_image_takes_the_requested_aspect_ratio(api: Api) -> None:
    key = await api.account(credits=5)
    square = data_url(png_bytes((50, 50)))
    body = await generate_ok(
        api, key, prompt="a cat", aspectRatio="16:9", referenceImageUrls=[square]
    )
    [data] = await images_of(api, body)
    assert Image.open(io.BytesIO(data)).size == (88, 48)
    assert provider_of(api).stats.calls_by_mode == {IMAGE_TO_IMAGE: 1}


# --- stream previews --------------------------------------------------------------------------
def previews_of(events: list[dict[str, Any]]) -> dict[str, Image.Image]:
    """Status message -> the preview it carried (decoded); checks the data URLs."""
    found = {}
    for event in events:
        schemas.StreamEvent.model_validate(event, strict=True)
        if event["type"] == "status" and "data" in event:
            assert list(event["data"]) == ["previewImage"]
            url = event["data"]["previewImage"]
            assert url.startswith("data:image/jpeg;base64,"), url[:40]
            image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            assert image.format == "JPEG"
            found[event["message"]] = image
    return found


async def test_stream_previews_show_the_latents_every_n_steps_but_the_last(
    api_factory: ApiFactory, tmp_path: Path, tiny_pipeline: Path
) -> None:
    every_step = await build(api_factory, tmp_path, tiny_pipeline, preview_every_steps=1)
    key = await every_step.account(credits=5)
    body = await generate_ok(
        every_step, key, prompt="a koi pond", mode="stream", aspectRatio="16:9"
    )
    previews = previews_of(body["events"])
    assert list(previews) == [f"Denoising step 1 of {STEPS}"]  # not the last step
    # The request's own latents: the tiny VAE halves each side of the 88x48 image.
    assert previews[f"Denoising step 1 of {STEPS}"].size == (44, 24)

    every_other = await build(api_factory, tmp_path, tiny_pipeline)  # the default: 2
    key = await every_other.account(credits=5)
    reference = data_url(png_bytes((64, 64), (200, 30, 30)))
    body = await generate_ok(
        every_other, key, prompt="a cat", mode="stream", referenceImageUrls=[reference]
    )
    previews = previews_of(body["events"])
    assert list(previews) == [f"Denoising step 2 of {I2I_RUN}"]
    assert previews[f"Denoising step 2 of {I2I_RUN}"].size == (32, 32)


async def test_no_previews_are_made_unless_someone_watches_a_stream(
    api_factory: ApiFactory,
    tmp_path: Path,
    tiny_pipeline: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[torch.Tensor] = []
    original = diffusers_provider.latent_preview

    def counting(latent: torch.Tensor) -> Image.Image:
        made.append(latent)
        return original(latent)

    monkeypatch.setattr(diffusers_provider, "latent_preview", counting)
    api = await build(api_factory, tmp_path, tiny_pipeline, preview_every_steps=1)
    key = await api.account(credits=10)
    body = await generate_ok(api, key, prompt="a fox", mode="stream", previews=False)
    assert previews_of(body["events"]) == {}
    await generate_ok(api, key, prompt="a fox", mode="sync")
    accepted = await generate_ok(api, key, prompt="a fox", mode="async")
    await api.wait_settled(key, accepted["generationId"])
    followed = await api.client.get(
        "/api/v1/generate/stream", params={"id": accepted["generationId"]}, headers=key.headers
    )
    assert previews_of(parse_sse(followed.text)[0]) == {}
    assert made == []  # none was even computed
    # Previews are on by default; the setting turns them off for everyone.
    body = await generate_ok(api, key, prompt="a fox", mode="stream")
    assert len(previews_of(body["events"])) == 1
    assert len(made) == 1
    off = await build(api_factory, tmp_path, tiny_pipeline, stream_previews=False)
    key = await off.account(credits=5)
    body = await generate_ok(off, key, prompt="a fox", mode="stream")
    assert previews_of(body["events"]) == {}
    assert len(made) == 1


@BOTH_DEPLOYMENTS
async def test_a_client_that_turns_previews_off_gets_the_plain_events(
    api_factory: ApiFactory, tmp_path: Path, tiny_pipeline: Path
) -> None:
    api = await build(api_factory, tmp_path, tiny_pipeline, preview_every_steps=1)
    key = await api.account(credits=5)
    watched = await generate_ok(api, key, prompt="a heron", mode="stream", seed=4)
    plain = await generate_ok(api, key, prompt="a heron", mode="stream", seed=4, previews=False)
    assert len(previews_of(watched["events"])) == 1
    assert previews_of(plain["events"]) == {}
    # Otherwise the same events: previews only add `data` to some status events.
    stripped = [{k: v for k, v in e.items() if k != "data"} for e in watched["events"][:-1]]
    assert plain["events"][:-1] == stripped
    # A resumed stream leaves them out too when asked.
    generation_id = watched["generationId"]
    again = await api.client.get(
        "/api/v1/generate/stream",
        params={"id": generation_id, "previews": "false"},
        headers=key.headers,
    )
    events, _ = parse_sse(again.text)
    assert previews_of(events) == {}
    assert events[-1]["type"] == "complete"
    assert events[:-1] == stripped[1:]  # all but the POST's opening event


# --- batching through the app -------------------------------------------------------------------
async def test_concurrent_requests_share_one_pipeline_call(api: Api) -> None:
    provider = provider_of(api)
    keys = [await api.account(credits=5) for _ in range(3)]
    quantities = [1, 2, 1]
    await provider.device_slots.acquire()  # the device is busy: requests collect
    try:
        batch = asyncio.gather(
            *(
                api.generate(
                    key,
                    prompt=f"prompt {i}",
                    selectedModel=MODEL,
                    quantity=q,
                    seed=100 + 10 * i,
                    mode="stream",
                )
                for i, (key, q) in enumerate(zip(keys, quantities, strict=True))
            )
        )
        await provider.batcher.wait_pending(3)
        assert provider.stats.pipeline_calls == 0
    finally:
        provider.device_slots.release()
    responses = await batch
    stats = provider.stats
    assert stats.pipeline_calls == 1
    assert stats.requests_per_call == {3: 1}
    assert stats.images_per_call == {4: 1}
    batched: list[list[bytes]] = []
    for response, key, q in zip(responses, keys, quantities, strict=True):
        events, _ = parse_sse(response.text)
        assert events[-1]["type"] == "complete"
        data = events[-1]["data"]
        assert len(data["imageUrls"]) == q
        assert data["creditsUsed"] == q
        # Each request got its own progress, from the shared call.
        assert f"Denoising step {STEPS} of {STEPS}" in statuses(events)
        batched.append(await images_of(api, data))
        await assert_books_balanced(api, key)
    assert len({image for images in batched for image in images}) == 4
    # Each request's images are its own: alone, the same seed makes the same images.
    alone = await generate_ok(api, keys[1], prompt="prompt 1", quantity=2, seed=110)
    alone_images = await images_of(api, alone)
    assert all(map(same_picture, alone_images, batched[1]))
    assert not same_picture(alone_images[0], batched[0][0])


async def test_a_request_that_does_not_fit_waits_for_the_next_call(api: Api) -> None:
    provider = provider_of(api)  # diffusers_max_batch is 4
    keys = [await api.account(credits=5) for _ in range(3)]
    await provider.device_slots.acquire()
    try:
        batch = asyncio.gather(
            *(
                api.generate(key, prompt="a boat", selectedModel=MODEL, quantity=2, seed=i)
                for i, key in enumerate(keys)
            )
        )
        await provider.batcher.wait_pending(3)
    finally:
        provider.device_slots.release()
    responses = await batch
    assert [len(r.json()["imageUrls"]) for r in responses] == [2, 2, 2]
    assert provider.stats.pipeline_calls == 2  # fewer calls than requests
    assert provider.stats.images_per_call == {4: 1, 2: 1}


async def test_different_sizes_are_not_batched_together(api: Api) -> None:
    provider = provider_of(api)
    keys = [await api.account(credits=5) for _ in range(2)]
    await provider.device_slots.acquire()
    try:
        batch = asyncio.gather(
            api.generate(keys[0], prompt="x", selectedModel=MODEL, aspectRatio="1:1"),
            api.generate(keys[1], prompt="x", selectedModel=MODEL, aspectRatio="16:9"),
        )
        await provider.batcher.wait_pending(2)
    finally:
        provider.device_slots.release()
    assert [r.status_code for r in await batch] == [200, 200]
    assert provider.stats.pipeline_calls == 2
    assert provider.stats.requests_per_call == {1: 2}


async def test_a_request_timing_out_while_waiting_leaves_the_batch(api: Api) -> None:
    provider = provider_of(api)
    key = await api.account(credits=5)
    await provider.device_slots.acquire()
    try:
        response = await api.generate(key, prompt="slow", selectedModel=QUICK)  # 0.5 s timeout
        assert response.status_code == 502
        assert "timed out" in response.json()["error"]
        assert provider.batcher.pending_jobs == 0
    finally:
        provider.device_slots.release()
    assert await api.balance(key) == 5
    body = await generate_ok(api, key, prompt="fine")  # the slot is free again
    assert len(body["imageUrls"]) == 1
    assert provider.stats.pipeline_calls == 1  # the timed-out request never ran
    await assert_books_balanced(api, key)


# --- failures -------------------------------------------------------------------------------------
async def test_a_failing_pipeline_fails_every_request_of_its_batch_and_refunds(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA kernel exploded at /secret/path/weights.bin")

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", explode)
    provider = provider_of(api)
    keys = [await api.account(credits=5) for _ in range(2)]
    await provider.device_slots.acquire()
    try:
        batch = asyncio.gather(
            *(api.generate(key, prompt="a cat", selectedModel=MODEL, quantity=2) for key in keys)
        )
        await provider.batcher.wait_pending(2)
    finally:
        provider.device_slots.release()
    responses = await batch
    assert provider.stats.pipeline_calls == 1
    assert provider.stats.failed_calls == 1
    for response, key in zip(responses, keys, strict=True):
        assert response.status_code == 502
        body = response.json()
        assert body["error"] == "The local model failed (RuntimeError)"
        assert "secret" not in response.text
        assert body["creditsUsed"] == 0
        record = await api.poll(key, body["generationId"])
        assert record["processingStatus"] == "failed"
        assert await api.balance(key) == 5
        await assert_books_balanced(api, key)
    monkeypatch.undo()
    follow_up = await api.generate(keys[0], prompt="again", selectedModel=MODEL)
    assert follow_up.status_code == 200  # not 429: the slot was freed
    assert await api.balance(keys[0]) == 4
    await assert_books_balanced(api, keys[0])


async def test_device_calls_never_exceed_the_concurrency(
    api_factory: ApiFactory,
    tmp_path: Path,
    tiny_pipeline: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = await build(
        api_factory, tmp_path, tiny_pipeline, diffusers_device_concurrency=2, diffusers_max_batch=1
    )
    provider = provider_of(api)
    assert provider.loaded[str(tiny_pipeline)].lanes.qsize() == 2
    active = peak = 0
    original = StableDiffusionPipeline.__call__

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal active, peak
        active += 1  # the GIL makes += on ints in these threads safe enough for a count
        peak = max(peak, active)
        try:
            return original(self, *args, **kwargs)
        finally:
            active -= 1

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", counting)
    keys = [await api.account(credits=5) for _ in range(4)]
    await provider.device_slots.acquire()
    await provider.device_slots.acquire()
    try:
        batch = asyncio.gather(
            *(api.generate(k, prompt="p", selectedModel=MODEL, seed=i) for i, k in enumerate(keys))
        )
        await provider.batcher.wait_pending(4)
    finally:
        provider.device_slots.release()
        provider.device_slots.release()
    assert [r.status_code for r in await batch] == [200] * 4
    assert provider.stats.pipeline_calls == 4  # max batch 1
    assert 1 <= peak <= 2


# --- pieces on their own ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("aspect", "base", "size"),
    [
        (1.0, 512, (512, 512)),
        (16 / 9, 512, (680, 384)),
        (9 / 16, 512, (384, 680)),
        (3 / 4, 512, (440, 592)),
        (1.0, 64, (64, 64)),
        (16 / 9, 64, (88, 48)),
        (100.0, 64, (184, 24)),  # clamped to 8:1
    ],
)
def test_output_size(aspect: float, base: int, size: tuple[int, int]) -> None:
    width, height = size_for_area(aspect, base, multiple=8)
    assert (width, height) == size
    assert width % 8 == 0 and height % 8 == 0


def test_recipe_defaults_are_sd_turbo_and_bad_options_are_named() -> None:
    recipe = Recipe.from_options({})
    assert (recipe.base_size, recipe.steps, recipe.guidance_scale) == (512, 1, 0.0)
    assert (recipe.image_to_image_steps, recipe.strength) == (2, 0.5)
    # int(steps * strength) must be at least 1 for diffusers to run a step.
    assert (
        Recipe.from_options(
            {"imageToImageSteps": 1, "strength": 0.3}
        ).image_to_image_steps_effective
        == 4
    )
    with pytest.raises(ValueError, match="steps"):
        Recipe.from_options({"steps": 0})
    with pytest.raises(ValueError, match="strength"):
        Recipe.from_options({"strength": "high"})


def test_the_reference_is_cropped_to_the_output_shape() -> None:
    wide = png_bytes((200, 50), (10, 200, 10))
    reference = ReferenceImage(wide, "image/png", 200, 50)
    fitted = fit_reference(reference, 64, 64)
    assert fitted.size == (64, 64)
    assert fitted.mode == "RGB"
    assert fitted.getpixel((32, 32)) == (10, 200, 10)


def test_locate_checks_folders_and_the_hub_cache(tiny_pipeline: Path, tmp_path: Path) -> None:
    assert locate(str(tiny_pipeline), allow_download=False) is None
    assert "no such folder" in (locate(str(tmp_path / "nope"), allow_download=True) or "")
    (tmp_path / "empty").mkdir()
    assert "model_index.json" in (locate(str(tmp_path / "empty"), allow_download=False) or "")
    hub_id = "bananastand-tests/not-in-the-cache"
    assert "hub cache" in (locate(hub_id, allow_download=False) or "")
    assert locate(hub_id, allow_download=True) is None  # fetched at start


def test_device_resolution() -> None:
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == (expected or "cpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(Unusable, match="not a torch device"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(Unusable, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_results_of_chunks_are_folded_into_one_answer() -> None:
    good, blanked = Output(b"png", False), Output(b"black", True)
    chunks = [(0, 2), (2, 1)]
    failed = ProviderError("The local model failed (X)")
    partial = collect_results(chunks, [[good, blanked], failed])
    assert [image.data for image in partial.images] == [b"png"]
    assert partial.errors == [
        "image 3: The local model failed (X)",
        "1 image(s) withheld by the model's safety checker",
    ]
    assert partial.safety_message is None
    verdict = collect_results([(0, 2)], [[blanked, blanked]])
    assert verdict.images == [] and verdict.safety_message == SAFETY_MESSAGE
    with pytest.raises(ProviderError, match=r"^The local model failed \(X\)$"):
        collect_results(chunks, [failed, RuntimeError("y")])


# --- the batcher with a fake run function ------------------------------------------------------
class FakeRun:
    """Records each batch; answers `payload!` per job, or raises `error`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.times: list[tuple[float, float]] = []  # (call time, oldest arrival)
        self.active = 0
        self.peak = 0
        self.changed = asyncio.Condition()

    async def wait_calls(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.calls) >= count)

    async def __call__(self, key: str, jobs: Sequence[Job[str, str]]) -> list[str]:
        self.calls.append((key, [job.payload for job in jobs]))
        self.times.append((asyncio.get_running_loop().time(), min(j.arrived for j in jobs)))
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.started.set()
        async with self.changed:
            self.changed.notify_all()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.error is not None:
                raise self.error
            return [f"{job.payload}!" for job in jobs]
        finally:
            self.active -= 1


def batcher_with(
    run: FakeRun, *, window_s: float = 0.0, max_batch: int = 4, slots: int = 1
) -> tuple[Batcher[str, str, str], asyncio.Semaphore]:
    limiter = asyncio.Semaphore(slots)
    return Batcher(run, window_s=window_s, max_batch=max_batch, limiter=limiter), limiter


async def test_batcher_groups_by_key_and_routes_each_result() -> None:
    run = FakeRun()
    batcher, limiter = batcher_with(run)
    await limiter.acquire()
    a1 = asyncio.create_task(batcher.submit("a", "a1"))
    b1 = asyncio.create_task(batcher.submit("b", "b1"))
    a2 = asyncio.create_task(batcher.submit("a", "a2"))
    await batcher.wait_pending(3)
    limiter.release()
    assert await asyncio.gather(a1, b1, a2) == ["a1!", "b1!", "a2!"]
    assert sorted(run.calls) == [("a", ["a1", "a2"]), ("b", ["b1"])]


async def test_batcher_fills_calls_up_to_max_batch_oldest_first() -> None:
    run = FakeRun()
    batcher, limiter = batcher_with(run, max_batch=4)
    await limiter.acquire()
    tasks = [
        asyncio.create_task(batcher.submit("k", name, size=size))
        for name, size in [("three", 3), ("two", 2), ("one", 1)]
    ]
    await batcher.wait_pending(3)
    assert batcher.pending_images == 6
    limiter.release()
    assert await asyncio.gather(*tasks) == ["three!", "two!", "one!"]
    # "two" does not fit beside "three"; "one" does; "two" leads the next call.
    assert run.calls == [("k", ["three", "one"]), ("k", ["two"])]


async def test_batcher_window_holds_a_lone_job_then_runs_it() -> None:
    run = FakeRun()
    batcher, _ = batcher_with(run, window_s=0.05, max_batch=8)
    async with asyncio.timeout(5):
        assert await batcher.submit("k", "solo") == "solo!"
    [(called, arrived)] = run.times
    assert called - arrived >= 0.05


async def test_batcher_window_collects_late_joiners_and_a_full_batch_ends_it() -> None:
    run = FakeRun()
    batcher, _ = batcher_with(run, window_s=60.0, max_batch=3)
    first = asyncio.create_task(batcher.submit("k", "first"))
    await batcher.wait_pending(1)
    second = asyncio.create_task(batcher.submit("k", "second"))
    await batcher.wait_pending(2)
    assert run.calls == []  # still collecting
    async with asyncio.timeout(5):  # not 60 s: the third job fills the batch
        third = await batcher.submit("k", "third")
        assert await asyncio.gather(first, second) == ["first!", "second!"]
    assert third == "third!"
    assert run.calls == [("k", ["first", "second", "third"])]


async def test_batcher_cancelling_a_waiting_job_removes_it() -> None:
    run = FakeRun()
    batcher, limiter = batcher_with(run)
    await limiter.acquire()
    gone = asyncio.create_task(batcher.submit("k", "gone"))
    kept = asyncio.create_task(batcher.submit("k", "kept"))
    await batcher.wait_pending(2)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batcher.pending_jobs == 1
    limiter.release()
    assert await kept == "kept!"
    assert run.calls == [("k", ["kept"])]


async def test_batcher_a_job_cancelled_while_running_does_not_stop_the_batch() -> None:
    run = FakeRun()
    run.gate = asyncio.Event()
    batcher, limiter = batcher_with(run)
    await limiter.acquire()
    gone = asyncio.create_task(batcher.submit("k", "gone"))
    kept = asyncio.create_task(batcher.submit("k", "kept"))
    await batcher.wait_pending(2)
    limiter.release()
    await run.started.wait()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    run.gate.set()
    assert await kept == "kept!"
    assert run.calls == [("k", ["gone", "kept"])]
    assert batcher.running_batches == 0
    assert not limiter.locked()  # the device slot came back


async def test_batcher_failure_reaches_every_job_of_the_batch() -> None:
    run = FakeRun()
    run.error = ProviderError("the device fell over")
    batcher, limiter = batcher_with(run)
    await limiter.acquire()
    tasks = [asyncio.create_task(batcher.submit("k", p)) for p in ("x", "y")]
    await batcher.wait_pending(2)
    limiter.release()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert [str(o) for o in outcomes] == ["the device fell over"] * 2
    assert all(isinstance(o, ProviderError) for o in outcomes)
    assert len(run.calls) == 1
    run.error = None
    assert await batcher.submit("k", "z") == "z!"  # the next batch runs normally


async def test_batcher_a_wrong_number_of_results_fails_the_batch() -> None:
    async def short(key: str, jobs: Sequence[Job[str, str]]) -> list[str]:
        return ["only one"]

    batcher: Batcher[str, str, str] = Batcher(short, window_s=0, max_batch=4)
    with pytest.raises(RuntimeError, match="1 results for 2 jobs"):
        await asyncio.gather(batcher.submit("k", "a"), batcher.submit("k", "b"))


async def test_batcher_runs_at_most_its_limiter_calls_at_once() -> None:
    run = FakeRun()
    run.gate = asyncio.Event()
    batcher, _ = batcher_with(run, slots=2)
    tasks = [asyncio.create_task(batcher.submit(key, key)) for key in ("a", "b", "c")]
    await run.wait_calls(2)
    assert batcher.pending_jobs == 1  # the third waits for a slot
    assert len(run.calls) == 2
    run.gate.set()
    assert await asyncio.gather(*tasks) == ["a!", "b!", "c!"]
    assert run.peak == 2
    assert len(run.calls) == 3


async def test_batcher_close_cancels_waiting_jobs_and_refuses_new_ones() -> None:
    run = FakeRun()
    batcher, limiter = batcher_with(run)
    await limiter.acquire()
    waiting = asyncio.create_task(batcher.submit("k", "w"))
    await batcher.wait_pending(1)
    await batcher.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(BatcherClosed):
        await batcher.submit("k", "late")
    assert run.calls == []
