"""The OpenAI-compatible endpoints, driven by the official `openai` SDK over ASGI."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from PIL import Image

from bananastand.api.openai_compat import aspect_ratio_for, parse_multipart
from bananastand.catalog import ModelSpec
from bananastand.errors import InvalidRequest
from bananastand.render import SIZES
from tests.support import Api, Key, png_bytes


def sdk(api: Api, key: Key | str) -> AsyncOpenAI:
    secret = key.secret if isinstance(key, Key) else key
    # api.client is an httpx.AsyncClient over the app's ASGI transport.
    return AsyncOpenAI(
        api_key=secret, base_url="http://testserver/v1", http_client=api.client, max_retries=0
    )


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


async def test_generations_return_urls_that_download_and_charge_per_image(api: Api) -> None:
    key = await api.account(credits=100)
    result = await sdk(api, key).images.generate(prompt="a banana stand", n=2)
    assert isinstance(result.created, int) and result.created > 0
    assert len(result.data) == 2
    for item in result.data:
        assert item.url and item.url.endswith(".png") and item.b64_json is None
        download = await api.download(item.url)
        assert download.status_code == 200
        _png(download.content)
    assert await api.balance(key) == 98
    assert await api.ledger_sum(key) == 98


async def test_n_is_clamped_like_the_contract(api: Api) -> None:
    key = await api.account(credits=100)
    result = await sdk(api, key).images.generate(prompt="many", n=10)
    assert len(result.data) == 4  # the default max quantity
    assert await api.balance(key) == 96
    for n in (0, 11, 2.5):
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk(api, key).images.generate(prompt="many", n=n)  # type: ignore[arg-type]
        assert "n must be" in caught.value.body["message"]  # type: ignore[index]
    assert await api.balance(key) == 96


@pytest.mark.parametrize(
    ("size", "ratio"), [("1536x1024", "3:2"), ("1024x1024", "1:1"), ("1024x1792", "9:16")]
)
async def test_b64_json_is_a_png_of_the_size_asked(api: Api, size: str, ratio: str) -> None:
    key = await api.account(credits=10)
    result = await sdk(api, key).images.generate(
        prompt="a lighthouse",
        model="nano-banana",
        size=size,  # type: ignore[arg-type]
        response_format="b64_json",
        quality="high",
        style="vivid",
        user="someone",
    )
    assert len(result.data) == 1
    assert result.data[0].url is None
    image = _png(base64.b64decode(result.data[0].b64_json or ""))
    assert image.size == SIZES[ratio]
    assert await api.balance(key) == 9


async def test_generations_over_raw_http_have_the_openai_shape(api: Api) -> None:
    key = await api.account(credits=10)
    response = await api.client.post(
        "/v1/images/generations",
        json={"prompt": "x", "size": "auto", "background": "auto", "output_format": "png"},
        headers=key.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data"}
    assert [set(item) for item in body["data"]] == [{"url"}]
    assert response.headers["X-Generation-Id"]


async def test_edit_with_one_image(api: Api) -> None:
    key = await api.account(credits=10)
    result = await sdk(api, key).images.edit(
        image=("ref.png", png_bytes((96, 64)), "image/png"),
        prompt="make it blue",
        model="nano-banana",
    )
    assert len(result.data) == 1
    download = await api.download(result.data[0].url or "")
    # No size: image-to-image keeps the reference's shape (3:2).
    assert _png(download.content).size == SIZES["3:2"]
    assert await api.balance(key) == 9  # the first reference image is included


async def test_edit_with_two_images_costs_the_extra_reference(api: Api) -> None:
    key = await api.account(credits=10)
    result = await sdk(api, key).images.edit(
        image=[
            ("a.png", png_bytes(colour=(1, 2, 3)), "image/png"),
            ("b.png", png_bytes(colour=(9, 9, 9)), "image/png"),
        ],
        prompt="combine them",
        n=2,
        size="1024x1024",
        response_format="b64_json",
    )
    assert len(result.data) == 2
    for item in result.data:
        assert _png(base64.b64decode(item.b64_json or "")).size == SIZES["1:1"]
    assert await api.balance(key) == 10 - 2 * (1 + 1)


async def test_edit_rejects_a_file_that_is_not_an_image(api: Api) -> None:
    key = await api.account(credits=10)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(api, key).images.edit(
            image=("notes.png", b"not an image at all", "image/png"), prompt="x"
        )
    assert caught.value.body["code"] == "invalid_request"  # type: ignore[index]
    assert caught.value.body["message"].startswith("image[0]")  # type: ignore[index]
    assert await api.balance(key) == 10


async def test_edit_without_an_image_is_400(api: Api) -> None:
    key = await api.account(credits=10)
    response = await api.client.post(
        "/v1/images/edits", data={"prompt": "x"}, files={"other": b"1"}, headers=key.headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_unknown_model_is_bad_request(api: Api) -> None:
    key = await api.account(credits=10)
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(api, key).images.generate(prompt="x", model="no-such-model")
    error = caught.value.body
    assert isinstance(error, dict)
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_request"
    assert error["param"] is None
    assert "no-such-model" in error["message"]
    assert await api.balance(key) == 10


async def test_openai_model_names_only_when_offered(api: Api) -> None:
    key = await api.account(credits=10)
    names = {model.name for model in api.services.generation.catalog}
    for name in ("gpt-image-1", "dall-e-3"):
        if name in names:
            continue
        with pytest.raises(openai.BadRequestError):
            await sdk(api, key).images.generate(prompt="x", model=name)


async def test_bad_key_is_authentication_error(api: Api) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(api, "nb_not-a-real-key").images.generate(prompt="x")
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "unauthorized"  # type: ignore[index]
    response = await api.client.post("/v1/images/generations", json={"prompt": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_api_access_disabled_is_permission_denied(api: Api) -> None:
    key = await api.account(credits=10, api_access=False)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await sdk(api, key).images.generate(prompt="x")
    assert caught.value.body["code"] == "api_access_disabled"  # type: ignore[index]


async def test_no_credits_is_402(api: Api) -> None:
    key = await api.account(credits=1)
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk(api, key).images.generate(prompt="x", n=2)
    assert caught.value.status_code == 402
    assert caught.value.body["code"] == "insufficient_credits"  # type: ignore[index]
    assert await api.balance(key) == 1


async def test_concurrency_limit_is_rate_limit_error(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=30)
    key = await api.account(credits=10)
    held = await api.generate(key, prompt="slow", mode="async")
    assert held.status_code == 200
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk(api, key).images.generate(prompt="another")
    assert caught.value.body["code"] == "concurrency_limit"  # type: ignore[index]
    assert caught.value.body["limit"] == 1  # type: ignore[index]
    assert caught.value.response.headers["X-RateLimit-Limit"] == "1"
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    with pytest.raises(openai.RateLimitError):
        await sdk(api, key).images.edit(image=("a.png", png_bytes(), "image/png"), prompt="x")
    assert await api.balance(key) == 9


async def test_failed_generation_is_502_in_openai_shape(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_failure_rate=1.0)
    key = await api.account(credits=10)
    with pytest.raises(openai.InternalServerError) as caught:
        await sdk(api, key).images.generate(prompt="x")
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "generation_failed"  # type: ignore[index]
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]
    assert await api.balance(key) == 10  # refunded


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"prompt": "x", "response_format": "gif"}, "response_format"),
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": "x", "n": "two"}, "n must"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "size": "1536x1024", "model": "nano-banana-sketch"}, "square"),
        ({"prompt": "   "}, "prompt"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_requests_are_400_in_openai_shape(api: Api, body: object, fragment: str) -> None:
    key = await api.account(credits=10)
    response = await api.client.post("/v1/images/generations", json=body, headers=key.headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert await api.balance(key) == 10


async def test_malformed_json_is_400(api: Api) -> None:
    key = await api.account()
    response = await api.client.post(
        "/v1/images/generations", content=b"{nope", headers=key.headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_contract_errors_keep_their_shape(api: Api) -> None:
    key = await api.account(credits=10)
    response = await api.generate(key, prompt="x", selectedModel="no-such-model")
    assert response.status_code == 400
    body = response.json()
    assert isinstance(body["error"], str)
    assert body["type"] == "invalid_request"
    unauthorised = await api.client.post("/api/v1/generate", json={"prompt": "x"})
    assert unauthorised.status_code == 401
    assert isinstance(unauthorised.json()["error"], str)


# --- helpers --------------------------------------------------------------------------


def _spec(**overrides: object) -> ModelSpec:
    values: dict[str, object] = {
        "name": "m",
        "displayName": "M",
        "backend": "builtin",
        "backendModel": "builtin-v1",
        "creditsCost": 1,
        "supportsImageInput": True,
        "supportsAspectRatio": True,
        "aspectRatios": ["1:1", "3:4", "4:3", "9:16", "16:9"],
    }
    values.update(overrides)
    return ModelSpec.model_validate(values)


def test_sizes_map_to_the_models_ratios() -> None:
    model = _spec()
    assert aspect_ratio_for(None, model) == "default"
    assert aspect_ratio_for("auto", model) == "default"
    assert aspect_ratio_for("1024x1024", model) == "1:1"
    assert aspect_ratio_for("1792x1024", model) == "16:9"
    assert aspect_ratio_for("1536x1024", model) == "4:3"  # 3:2 not offered: nearest
    assert aspect_ratio_for("1000x3000", model) == "9:16"
    flat = _spec(supportsAspectRatio=False, aspectRatios=[])
    assert aspect_ratio_for("512x512", flat) == "default"
    for bad in ("1536x1024", "0x10", "12", "axb"):
        with pytest.raises(InvalidRequest):
            aspect_ratio_for(bad, flat)


def test_multipart_parser_keeps_binary_bytes_intact() -> None:
    payload = bytes(range(256)) + b"\r\n--not-the-boundary\r\n\r\n" + bytes(range(256))
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"prompt": "héllo", "n": "2"},
        files=[("image[]", ("a.bin", payload, "image/png")), ("image[]", ("b.png", b"B"))],
    )
    body = request.read()
    parts = parse_multipart(body, request.headers["content-type"])
    by_name = [(p.name, p.filename, p.data) for p in parts]
    assert ("prompt", None, "héllo".encode()) in by_name
    assert ("n", None, b"2") in by_name
    assert ("image[]", "a.bin", payload) in by_name
    assert ("image[]", "b.png", b"B") in by_name


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1",
            "multipart/form-data; boundary=b",
        ),
        (b"whatever", "multipart/form-data"),
        (b"--b\r\n\r\n1\r\n--b--\r\n", "multipart/form-data; boundary=b"),
        (b"a=1", "application/x-www-form-urlencoded"),
    ],
)
def test_multipart_parser_refuses_malformed_bodies(body: bytes, content_type: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_multipart(body, content_type)


def test_multipart_parser_bounds_the_number_of_parts() -> None:
    fields = "".join(
        f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n' for i in range(10)
    )
    body = (fields + "--b--\r\n").encode()
    assert len(parse_multipart(body, "multipart/form-data; boundary=b")) == 10
    with pytest.raises(InvalidRequest, match="Too many"):
        parse_multipart(body, "multipart/form-data; boundary=b", max_parts=5)
