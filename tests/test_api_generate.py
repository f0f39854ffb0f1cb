"""POST /api/v1/generate in sync mode and GET ?id=: the contract's shapes and rules."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tests.support import BOTH_DEPLOYMENTS, Api, data_url, png_bytes

pytestmark = BOTH_DEPLOYMENTS

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_quick_start_request_returns_an_image(api: Api) -> None:
    key = await api.account(credits=100)
    response = await api.generate(
        key, prompt="A cute orange cat sitting on a windowsill", selectedModel="nano-banana"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "generationId", "imageUrls", "creditsUsed", "remainingCredits"}
    assert body["success"] is True
    assert body["creditsUsed"] == 1
    assert body["remainingCredits"] == 99
    assert len(body["imageUrls"]) == 1
    url = body["imageUrls"][0]
    assert url.startswith("https://images.example.test/images/")
    assert url.endswith(".png")
    image = await api.download(url)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (1024, 1024)


async def test_poll_returns_the_record(api: Api) -> None:
    key = await api.account()
    body = (await api.generate(key, prompt="  a lighthouse at dusk  ")).json()
    data = await api.poll(key, body["generationId"])
    assert data["id"] == body["generationId"]
    assert data["prompt"] == "a lighthouse at dusk"  # trimmed
    assert data["outputImageUrls"] == body["imageUrls"]
    assert data["modelUsed"] == "nano-banana"
    assert data["processingStatus"] == "completed"
    assert data["creditsUsed"] == 1
    assert ISO_MS_Z.match(data["createdAt"]), data["createdAt"]
    assert "errorMessage" not in data


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("default", (1024, 1024)),
        ("1:1", (1024, 1024)),
        ("16:9", (1280, 720)),
        ("9:16", (720, 1280)),
        ("21:9", (1344, 576)),
        ("4:5", (896, 1120)),
    ],
)
async def test_output_has_the_requested_aspect_ratio(api: Api, ratio: str, size: tuple) -> None:
    key = await api.account()
    body = (await api.generate(key, prompt="mountains", aspectRatio=ratio)).json()
    image = Image.open(io.BytesIO((await api.download(body["imageUrls"][0])).content))
    assert image.size == size


async def test_quantity_makes_that_many_distinct_images_and_costs_that_much(api: Api) -> None:
    key = await api.account(credits=10)
    body = (await api.generate(key, prompt="a red bicycle", quantity=3)).json()
    assert body["creditsUsed"] == 3
    assert body["remainingCredits"] == 7
    assert len(body["imageUrls"]) == 3
    contents = [(await api.download(u)).content for u in body["imageUrls"]]
    assert len(set(contents)) == 3


@pytest.mark.parametrize(
    ("asked", "made"), [(0, 1), (-5, 1), (0.5, 1), (2.9, 2), (99, 4), (1e300, 4), (-1e300, 1)]
)
async def test_quantity_is_truncated_into_range(api: Api, asked: float, made: int) -> None:
    key = await api.account(credits=20)
    body = (await api.generate(key, prompt="stars", quantity=asked)).json()
    assert len(body["imageUrls"]) == made
    assert body["creditsUsed"] == made


async def test_streaming_model_forces_quantity_one(api: Api) -> None:
    key = await api.account()
    body = (
        await api.generate(key, prompt="fox", selectedModel="nano-banana-sketch", quantity=4)
    ).json()
    assert len(body["imageUrls"]) == 1
    assert body["creditsUsed"] == 1


async def test_same_prompt_and_seed_give_the_same_image(api: Api) -> None:
    key = await api.account()
    first = (await api.generate(key, prompt="tea cup", seed=7)).json()
    second = (await api.generate(key, prompt="tea cup", seed=7)).json()
    other = (await api.generate(key, prompt="tea cup", seed=8)).json()
    a, b, c = [(await api.download(x["imageUrls"][0])).content for x in (first, second, other)]
    assert a == b
    assert a != c


async def test_image_to_image_with_data_urls_costs_extra_per_additional_reference(api: Api) -> None:
    key = await api.account(credits=20)
    refs = [data_url(png_bytes((300, 200), (10, 200, 10))), data_url(png_bytes((64, 64)))]
    body = (
        await api.generate(key, prompt="make it night", referenceImageUrls=refs, quantity=2)
    ).json()
    assert body["success"] is True, body
    # unit cost = 1 + 1 extra reference; times 2 images
    assert body["creditsUsed"] == 4
    assert body["remainingCredits"] == 16
    image = Image.open(io.BytesIO((await api.download(body["imageUrls"][0])).content))
    assert image.size == (1248, 832)  # "default" keeps the first reference's 3:2 shape
    data = await api.poll(key, body["generationId"])
    assert data["referenceImageCount"] == 2


async def test_an_image_of_this_server_is_a_reference_read_from_its_own_storage(
    api: Api,
) -> None:
    key = await api.account(credits=10)
    wide = (await api.generate(key, prompt="a long train", aspectRatio="16:9")).json()
    url = wide["imageUrls"][0]
    # Its public base URL resolves nowhere from here: only the store can answer,
    # as it does for a server on a private or local address.
    answer = await api.generate(key, prompt="the same train at night", referenceImageUrls=[url])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    image = Image.open(io.BytesIO((await api.download(body["imageUrls"][0])).content))
    assert image.width / image.height > 1.6  # "default" took the reference's 16:9 shape
    assert (await api.poll(key, body["generationId"]))["referenceImageCount"] == 1

    base, expires, signature, filename = url.rsplit("/", 3)
    for bad, why in (
        (f"{base}/{expires}/{signature[:-2]}AA/{filename}", "No such image"),
        (f"{base}/{int(expires) + 1}/{signature}/{filename}", "No such image"),
    ):
        refused = await api.generate(key, prompt="forged", referenceImageUrls=[bad])
        assert refused.status_code == 400
        assert refused.json()["error"] == (
            f"referenceImageUrls[0]: {why} (an image URL of this server)"
        )
    assert await api.balance(key) == 8  # the refusals cost nothing


async def test_image_to_image_output_is_derived_from_the_reference(api: Api) -> None:
    key = await api.account()
    reference = Image.new("RGB", (256, 256), (0, 0, 0))
    reference.paste((255, 255, 255), (0, 0, 128, 256))  # white left half
    buffer = io.BytesIO()
    reference.save(buffer, "PNG")
    body = (
        await api.generate(key, prompt="a poster", referenceImageUrls=[data_url(buffer.getvalue())])
    ).json()
    out = Image.open(io.BytesIO((await api.download(body["imageUrls"][0])).content)).convert("L")
    left = out.crop((0, 0, out.width // 2, out.height)).resize((1, 1), Image.BOX).getpixel((0, 0))
    right = (
        out.crop((out.width // 2, 0, out.width, out.height))
        .resize((1, 1), Image.BOX)
        .getpixel((0, 0))
    )
    assert left > right + 60


def _bad_requests() -> list[tuple[dict, str]]:
    return [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "x" * 8001}, "too long"),
        ({"prompt": "cat", "selectedModel": "no-such-model"}, "no-such-model"),
        ({"prompt": "cat", "mode": "batch"}, "mode"),
        ({"prompt": "cat", "mode": 1}, "mode"),
        ({"prompt": "cat", "quantity": "2"}, "quantity"),
        ({"prompt": "cat", "quantity": True}, "quantity"),
        ({"prompt": "cat", "quantity": None, "aspectRatio": "7:3"}, "aspectRatio"),
        (
            {"prompt": "cat", "selectedModel": "nano-banana-sketch", "aspectRatio": "16:9"},
            "aspectRatio",
        ),
        ({"prompt": "cat", "referenceImageUrls": "http://example.com/a.png"}, "referenceImageUrls"),
        ({"prompt": "cat", "referenceImageUrls": [1]}, "referenceImageUrls"),
        (
            {
                "prompt": "cat",
                "selectedModel": "nano-banana-sketch",
                "referenceImageUrls": [data_url(png_bytes())],
            },
            "reference",
        ),
        ({"prompt": "cat", "referenceImageUrls": [data_url(png_bytes())] * 4}, "Too many"),
        (
            {"prompt": "cat", "referenceImageUrls": ["data:image/png;base64,bm90IGFuIGltYWdl"]},
            "referenceImageUrls[0]",
        ),
        (
            {"prompt": "cat", "referenceImageUrls": ["ftp://example.com/a.png"]},
            "referenceImageUrls[0]",
        ),
        (
            {"prompt": "cat", "referenceImageUrls": ["http://127.0.0.1:1/a.png"]},
            "referenceImageUrls[0]",
        ),
        (
            {"prompt": "cat", "referenceImageUrls": ["http://169.254.169.254/latest/meta-data"]},
            "referenceImageUrls[0]",
        ),
    ]


@pytest.mark.parametrize(("body", "mentions"), _bad_requests())
async def test_bad_parameters_are_400_and_charge_nothing(
    api: Api, body: dict, mentions: str
) -> None:
    key = await api.account(credits=10)
    response = await api.generate(key, **body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] in ("invalid_request", "model_unavailable")
    assert mentions.lower() in error["error"].lower()
    assert "Traceback" not in response.text
    assert await api.balance(key) == 10


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"prompt"', "application/json"),
        (b"", "application/json"),
        (b"prompt=cat", "application/x-www-form-urlencoded"),
        (b"\xff\xfe\x00", "application/json"),
        (b'{"prompt": "cat", "quantity": NaN}', "application/json"),
    ],
)
async def test_malformed_bodies_are_400(api: Api, content: bytes, content_type: str) -> None:
    key = await api.account(credits=5)
    response = await api.client.post(
        "/api/v1/generate",
        content=content,
        headers={**key.headers, "Content-Type": content_type},
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "invalid_request"
    assert await api.balance(key) == 5


async def test_json_without_content_type_is_accepted(api: Api) -> None:
    key = await api.account()
    response = await api.client.post(
        "/api/v1/generate", content=b'{"prompt": "cat"}', headers=key.headers
    )
    assert response.status_code == 200, response.text


async def test_unknown_fields_are_ignored(api: Api) -> None:
    key = await api.account()
    response = await api.generate(key, prompt="cat", style="watercolor", n=3, extra={"a": 1})
    assert response.status_code == 200, response.text


async def test_huge_body_is_413(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(max_body_bytes=10_000)
    key = await api.account(credits=5)
    response = await api.generate(key, prompt="x" * 20_000)
    assert response.status_code == 413
    assert response.json()["type"] == "payload_too_large"
    assert await api.balance(key) == 5


async def test_prompt_limit_is_configurable(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(max_prompt_length=10)
    key = await api.account()
    assert (await api.generate(key, prompt="x" * 10)).status_code == 200
    assert (await api.generate(key, prompt="x" * 11)).status_code == 400


async def test_failed_generation_is_502_refunded_and_readable(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_failure_rate=1.0)
    key = await api.account(credits=10)
    response = await api.generate(key, prompt="cat", quantity=2)
    assert response.status_code == 502
    body = response.json()
    assert body["success"] is False
    assert body["type"] == "generation_failed"
    assert body["error"]
    data = await api.poll(key, body["generationId"])
    assert data["processingStatus"] == "failed"
    assert data["creditsUsed"] == 0
    assert data["errorMessage"]
    assert data["outputImageUrls"] == []
    assert await api.balance(key) == 10
    assert await api.ledger_sum(key) == 10


async def test_partial_failure_refunds_the_missing_images(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_failure_rate=0.5)
    key = await api.account(credits=40)
    import random

    # Pick a seed whose simulated failures leave some but not all of 4 images.
    seed = next(
        s
        for s in range(1000)
        if 0 < sum(random.Random(f"{s + i}:{i}").random() < 0.5 for i in range(4)) < 4
    )
    body = (await api.generate(key, prompt="cat", quantity=4, seed=seed)).json()
    produced = len(body["imageUrls"])
    assert 0 < produced < 4
    assert body["creditsUsed"] == produced
    assert body["remainingCredits"] == 40 - produced
    data = await api.poll(key, body["generationId"])
    assert data["creditsUsed"] == produced
    assert await api.ledger_sum(key) == 40 - produced


async def test_safety_verdict_is_the_contract_warning(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_safety_words=["forbidden"])
    key = await api.account(credits=5)
    response = await api.generate(key, prompt="something forbidden")
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


async def test_another_accounts_generation_is_404(api: Api) -> None:
    alice = await api.account()
    bob = await api.account()
    body = (await api.generate(alice, prompt="cat")).json()
    response = await api.client.get(
        "/api/v1/generate", params={"id": body["generationId"]}, headers=bob.headers
    )
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"
    unknown = await api.client.get("/api/v1/generate", params={"id": "nope"}, headers=bob.headers)
    assert unknown.status_code == 404
    assert unknown.json() == response.json()
    missing = await api.client.get("/api/v1/generate", headers=bob.headers)
    assert missing.status_code == 400


async def test_default_model_is_configurable(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(default_model="nano-banana-sketch")
    key = await api.account()
    body = (await api.generate(key, prompt="cat")).json()
    assert (await api.poll(key, body["generationId"]))["modelUsed"] == "nano-banana-sketch"


async def test_generation_past_the_model_timeout_fails_and_is_refunded(
    api_factory, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        """
[[models]]
name = "nano-banana"
displayName = "Nano Banana"
backend = "builtin"
backendModel = "builtin-v1"
creditsCost = 1
supportsImageInput = true
supportsAspectRatio = false
timeoutSeconds = 0.2
"""
    )
    api = await api_factory(catalog_path=catalog, builtin_latency_seconds=30)
    key = await api.account(credits=4)
    response = await api.generate(key, prompt="too slow", quantity=2)
    assert response.status_code == 502
    assert "timed out" in response.json()["error"]
    assert await api.balance(key) == 4
    data = await api.poll(key, response.json()["generationId"])
    assert data["processingStatus"] == "failed"
    assert data["creditsUsed"] == 0


@pytest.mark.parametrize(("literal", "made"), [(b"1e400", 4), (b"-1e400", 1)])
async def test_infinite_quantity_is_truncated_not_rejected(
    api: Api, literal: bytes, made: int
) -> None:
    key = await api.account(credits=10)
    response = await api.client.post(
        "/api/v1/generate",
        content=b'{"prompt": "cat", "quantity": ' + literal + b"}",
        headers=key.headers,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["imageUrls"]) == made


async def test_model_name_is_trimmed(api: Api) -> None:
    key = await api.account()
    response = await api.generate(key, prompt="cat", selectedModel=" nano-banana ")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "cat", "quantity": "2"}, "quantity must be a number"),
        ({"quantity": 1}, "prompt is required"),
        ({"prompt": ["cat"]}, "prompt must be a string"),
        (
            {"prompt": "cat", "referenceImageUrls": [1, 2]},
            "referenceImageUrls must be an array of URL strings",
        ),
        ({"prompt": "cat", "mode": 3}, 'mode must be one of "sync", "stream", "async"'),
    ],
)
async def test_type_errors_name_the_field_plainly(api: Api, body: dict, message: str) -> None:
    key = await api.account()
    response = await api.generate(key, **body)
    assert response.status_code == 400
    assert response.json()["error"] == message


async def test_generations_list_is_newest_first_paginated_and_private(api: Api) -> None:
    key = await api.account(credits=10)
    other = await api.account()
    ids = [(await api.generate(key, prompt=f"n{i}")).json()["generationId"] for i in range(3)]
    await api.generate(other, prompt="not yours")
    page = (await api.client.get("/api/v1/generations?limit=2", headers=key.headers)).json()
    assert [g["id"] for g in page["data"]] == [ids[2], ids[1]]
    rest = (
        await api.client.get(
            f"/api/v1/generations?limit=2&before={page['nextBefore']}", headers=key.headers
        )
    ).json()
    assert [g["id"] for g in rest["data"]] == [ids[0]]
    assert rest["nextBefore"] is None
    foreign = await api.client.get(f"/api/v1/generations?before={ids[0]}", headers=other.headers)
    assert foreign.status_code == 404
    assert (
        await api.client.get("/api/v1/generations?limit=0", headers=key.headers)
    ).status_code == 400


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/generate", "id is required"),
        ("/api/v1/generate?id=", "id must be a generation id"),
        (f"/api/v1/generate?id={'x' * 65}", "id must be a generation id"),
        ("/api/v1/generations?limit=abc", "limit must be a whole number from 1 to 100"),
        ("/api/v1/generations?limit=101", "limit must be a whole number from 1 to 100"),
        ("/api/v1/generations?limit=-3", "limit must be a whole number from 1 to 100"),
        (f"/api/v1/generations?before={'x' * 65}", "before must be the `nextBefore` of a page"),
        ("/api/v1/generate/stream?id=abc&previews=maybe", "previews must be true or false"),
    ],
)
async def test_bad_query_parameters_are_clear_400s(api: Api, path: str, message: str) -> None:
    key = await api.account()
    response = await api.client.get(path, headers=key.headers)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": message, "type": "invalid_request"}


async def test_the_key_is_checked_before_the_parameters(api: Api) -> None:
    response = await api.client.get("/api/v1/generations?limit=abc")
    assert response.status_code == 401
    assert response.json()["type"] == "unauthorized"
    head = await api.client.head("/api/v1/credits", headers=(await api.account()).headers)
    assert head.status_code == 200
