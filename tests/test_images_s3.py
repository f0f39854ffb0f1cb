"""Images, thumbnails and reference images in an object store (a real S3 server,
`tests.s3`): served with the same URLs, HEAD, Range and 304 as from a folder, or
by a redirect to a presigned URL; 404/410 for what is gone, 503 with Retry-After
when the store is down (a generation then fails and is refunded); sweeps delete
from the bucket."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bananastand.object_storage import ObjectStorage
from bananastand.storage import image_key, thumb_key
from tests.s3 import SECRET_KEY, S3Server, free_port
from tests.support import BOTH_DEPLOYMENTS, Api, ApiFactory, data_url, png_bytes


@pytest.fixture
async def s3_api(api_factory: ApiFactory, s3_settings: dict[str, Any]) -> Api:
    return await api_factory(**s3_settings)  # type: ignore[no-any-return]


async def one_image(api: Api) -> tuple[str, str, str]:
    key = await api.account()
    response = await api.generate(key, prompt="a tram in the rain")
    assert response.status_code == 200, response.text
    url = response.json()["imageUrls"][0]
    image_id, extension = url.rsplit("/", 1)[1].split(".")
    return url, image_id, extension


def path_of(api: Api, url: str) -> str:
    base = api.services.settings.base_url
    assert url.startswith(base + "/")
    return url[len(base) :]


def bucket_keys(s3_server: S3Server, settings: dict[str, Any]) -> list[str]:
    bucket = settings["storage_url"].split("/")[2]
    return s3_server.keys(bucket)


# --- where the bytes are ---------------------------------------------------------------


async def test_images_and_thumbnails_are_written_to_the_bucket_not_the_disk(
    s3_api: Api, s3_server: S3Server, s3_settings: dict[str, Any]
) -> None:
    url, image_id, extension = await one_image(s3_api)
    assert bucket_keys(s3_server, s3_settings) == [f"bananastand/{image_key(image_id, extension)}"]
    thumb = await s3_api.client.get(path_of(s3_api, url), params={"size": "thumb"})
    assert thumb.status_code == 200  # made at first look, kept in the bucket
    assert f"bananastand/{thumb_key(image_id)}" in bucket_keys(s3_server, s3_settings)
    assert not (s3_api.services.settings.data_dir / "files").exists()
    assert isinstance(s3_api.services.generation.storage, ObjectStorage)


# --- serving -------------------------------------------------------------------------------


async def test_get_streams_the_image_with_type_cache_and_length(s3_api: Api) -> None:
    url, image_id, _ = await one_image(s3_api)
    response = await s3_api.download(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["etag"] == f'"{image_id}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert "last-modified" in response.headers
    max_age = int(response.headers["cache-control"].split("max-age=")[1].split(",")[0])
    assert 14 * 86400 < max_age <= 15 * 86400


async def test_head_answers_like_get_without_a_body(s3_api: Api) -> None:
    url, _, _ = await one_image(s3_api)
    full = await s3_api.download(url)
    head = await s3_api.client.head(path_of(s3_api, url))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "image/png"
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["etag"] == full.headers["etag"]


async def test_byte_ranges(s3_api: Api) -> None:
    url, _, _ = await one_image(s3_api)
    path = path_of(s3_api, url)
    whole = (await s3_api.download(url)).content
    size = len(whole)

    async def ask(value: str, **headers: str) -> httpx.Response:
        return await s3_api.client.get(path, headers={"Range": value, **headers})

    first = await ask("bytes=0-7")
    assert first.status_code == 206
    assert first.content == whole[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.headers["content-range"] == f"bytes 0-7/{size}"
    assert first.headers["content-length"] == "8"
    tail = await ask("bytes=-10")
    assert tail.status_code == 206 and tail.content == whole[-10:]
    assert tail.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
    rest = await ask(f"bytes={size - 3}-")
    assert rest.status_code == 206 and rest.content == whole[-3:]
    past_end = await ask(f"bytes=5-{size + 100}")
    assert past_end.status_code == 206 and past_end.content == whole[5:]
    beyond = await ask(f"bytes={size}-")
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    for ignored in ("bytes=0-1,5-6", "bytes=x-y", "pages=1-2"):
        answer = await ask(ignored)
        assert answer.status_code == 200 and answer.content == whole, ignored
    stale = await ask("bytes=0-7", **{"If-Range": '"another-version"'})
    assert stale.status_code == 200 and stale.content == whole
    fresh = await ask("bytes=0-7", **{"If-Range": first.headers["etag"]})
    assert fresh.status_code == 206 and fresh.content == whole[:8]


async def test_revalidation_with_the_etag_is_304(s3_api: Api) -> None:
    url, _, _ = await one_image(s3_api)
    first = await s3_api.download(url)
    again = await s3_api.client.get(
        path_of(s3_api, url), headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    other = await s3_api.client.get(path_of(s3_api, url), headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.content == first.content


async def test_thumbnails_come_from_the_bucket_and_are_made_when_missing(s3_api: Api) -> None:
    url, image_id, _ = await one_image(s3_api)
    thumb = await s3_api.client.get(path_of(s3_api, url), params={"size": "thumb"})
    assert thumb.status_code == 200
    assert thumb.headers["etag"] == f'"{image_id}.thumb"'
    storage = s3_api.services.generation.storage
    made = await storage.get(thumb_key(image_id))
    assert made == thumb.content
    await storage.delete(thumb_key(image_id))  # gone: the next look makes it again
    again = await s3_api.client.get(path_of(s3_api, url), params={"size": "thumb"})
    assert again.status_code == 200 and again.content == made
    assert await storage.get(thumb_key(image_id)) == made


async def test_a_deleted_image_is_404_and_an_expired_url_410(s3_api: Api) -> None:
    url, image_id, extension = await one_image(s3_api)
    await s3_api.services.generation.storage.delete(image_key(image_id, extension))
    for method in ("GET", "HEAD"):
        gone = await s3_api.client.request(method, path_of(s3_api, url))
        assert gone.status_code == 404, method
    assert (await s3_api.download(url)).json()["type"] == "not_found"
    past = datetime.now(UTC) - timedelta(seconds=5)
    expired = s3_api.services.generation.signer.url(image_id, extension, past)
    answer = await s3_api.download(expired)
    assert answer.status_code == 410 and answer.json()["type"] == "expired"


async def test_the_openai_b64_answer_reads_the_bucket(s3_api: Api) -> None:
    import base64

    key = await s3_api.account()
    response = await s3_api.client.post(
        "/v1/images/generations",
        json={"prompt": "a pear", "response_format": "b64_json"},
        headers=key.headers,
    )
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    assert data.startswith(b"\x89PNG")


# --- redirect to a presigned URL ------------------------------------------------------


async def test_redirect_mode_answers_307_to_a_presigned_url(
    api_factory: ApiFactory, s3_settings: dict[str, Any]
) -> None:
    api = await api_factory(**s3_settings, storage_serve="redirect", storage_presign_seconds=120)
    url, image_id, extension = await one_image(api)
    answer = await api.download(url)
    assert answer.status_code == 307
    location = answer.headers["location"]
    assert location.startswith(s3_settings["storage_endpoint"] + "/")
    assert "X-Amz-Expires=120" in location and SECRET_KEY not in location
    assert "max-age=60" in answer.headers["cache-control"]
    async with httpx.AsyncClient() as client:
        fetched = await client.get(location)
    assert fetched.status_code == 200
    assert fetched.content.startswith(b"\x89PNG")
    assert fetched.headers["content-type"] == "image/png"
    # The same URL rules as streaming: deleted is 404, expired 410 (no redirect).
    await api.services.generation.storage.delete(image_key(image_id, extension))
    assert (await api.download(url)).status_code == 404
    past = datetime.now(UTC) - timedelta(seconds=5)
    expired = api.services.generation.signer.url(image_id, extension, past)
    assert (await api.download(expired)).status_code == 410


# --- the store is down ----------------------------------------------------------------


def unreachable(settings: dict[str, Any]) -> dict[str, Any]:
    """The same settings with the endpoint on a port nothing listens on."""
    return {
        **settings,
        "storage_endpoint": f"http://127.0.0.1:{free_port()}",
        "storage_timeout_seconds": 2,
    }


async def test_serving_while_the_store_is_down_is_503_with_retry_after_logged_once(
    api_factory: ApiFactory, s3_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    api = await api_factory(**unreachable(s3_settings))
    signer = api.services.generation.signer
    url = signer.url("a" * 24, "png", datetime.now(UTC) + timedelta(days=1))
    with caplog.at_level(logging.INFO):
        for method, headers in (("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=0-1"})):
            answer = await api.client.request(method, path_of(api, url), headers=headers)
            assert answer.status_code == 503, (method, answer.text)
            assert int(answer.headers["retry-after"]) > 0
            if method == "GET":
                body = answer.json()
                assert body["type"] == "server_busy"
                assert "storage" in body["error"]
                assert "127.0.0.1" not in answer.text and "Traceback" not in answer.text
    outages = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outages) == 1, caplog.text
    assert SECRET_KEY not in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_generation_whose_image_cannot_be_stored_fails_and_is_refunded(
    api_factory: ApiFactory, s3_settings: dict[str, Any]
) -> None:
    api = await api_factory(**unreachable(s3_settings))
    key = await api.account(credits=10)
    started = time.monotonic()
    response = await api.generate(key, prompt="nowhere to put it")
    assert time.monotonic() - started < 15  # the store's timeout, not minutes
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["type"] == "generation_failed"
    assert "storage" in body["error"].lower()
    record = await api.poll(key, body["generationId"])
    assert record["processingStatus"] == "failed" and record["creditsUsed"] == 0
    assert await api.balance(key) == 10
    ledger = await api.services.billing.ledger(key.account_id, limit=100)
    assert sorted(entry.amount for entry in ledger if entry.amount) == [-1, 1, 10]
    # The account's slot was released with the settlement.
    assert (await api.generate(key, prompt="again")).status_code == 502


async def test_references_cannot_be_saved_while_the_store_is_down_nothing_charged(
    api_factory: ApiFactory, s3_settings: dict[str, Any]
) -> None:
    api = await api_factory(**unreachable(s3_settings))
    key = await api.account(credits=10)
    response = await api.generate(
        key, prompt="like this", mode="async", referenceImageUrls=[data_url(png_bytes())]
    )
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "server_busy" and response.headers["retry-after"]
    assert await api.balance(key) == 10


# --- sweeps ------------------------------------------------------------------------------


async def test_expired_images_are_deleted_from_the_bucket(
    api_factory: ApiFactory, s3_settings: dict[str, Any], s3_server: S3Server
) -> None:
    api = await api_factory(**s3_settings, image_ttl_seconds=0)
    key = await api.account()
    for _ in range(3):
        answer = await api.generate(key, prompt="gone soon")
        assert answer.status_code == 200
        image_id = answer.json()["imageUrls"][0].rsplit("/", 1)[1].split(".")[0]
        await api.services.generation.storage.put(thumb_key(image_id), b"an earlier look")
    assert len(bucket_keys(s3_server, s3_settings)) == 6  # images and thumbnails
    assert await api.services.generation.sweep_expired() == 3
    assert bucket_keys(s3_server, s3_settings) == []
    assert await api.services.generation.sweep_expired() == 0


async def test_orphans_are_swept_from_the_bucket_once_old(
    s3_api: Api, s3_server: S3Server, s3_settings: dict[str, Any]
) -> None:
    url, kept_id, extension = await one_image(s3_api)
    thumb = await s3_api.client.get(path_of(s3_api, url), params={"size": "thumb"})
    assert thumb.status_code == 200
    storage = s3_api.services.generation.storage
    assert isinstance(storage, ObjectStorage)
    orphan = image_key("orphanorphanorphan01", "png")
    await storage.put(orphan, b"never settled")
    await storage.put("references/no-such-generation/0.bin", b"left behind")
    service = s3_api.services.generation
    assert await service.sweep_orphans() == 0  # young: maybe still running
    storage.clock = lambda: time.time() + 3 * 86400
    assert await service.sweep_orphans() == 2
    keys = bucket_keys(s3_server, s3_settings)
    assert keys == sorted(
        [f"bananastand/{image_key(kept_id, extension)}", f"bananastand/{thumb_key(kept_id)}"]
    )
    assert (await s3_api.download(url)).status_code == 200


# --- reference images, for workers elsewhere ----------------------------------------------


@BOTH_DEPLOYMENTS
async def test_reference_images_go_through_the_bucket_and_are_dropped_after(
    api_factory: ApiFactory,
    s3_settings: dict[str, Any],
    s3_server: S3Server,
    deployment: str,
) -> None:
    api = await api_factory(**s3_settings, builtin_latency_seconds=0.3)
    key = await api.account()
    response = await api.generate(
        key, prompt="like this", mode="async", referenceImageUrls=[data_url(png_bytes())]
    )
    assert response.status_code == 200, response.text
    generation_id = response.json()["generationId"]
    saved = [k for k in bucket_keys(s3_server, s3_settings) if "/references/" in k]
    assert saved == [
        f"bananastand/references/{generation_id}/0.bin",
        f"bananastand/references/{generation_id}/0.json",
    ]
    # Scale-out: the worker (services of its own) reads them from the bucket.
    await api.services.generation.wait_settled(generation_id)
    done = await api.poll(key, generation_id)
    assert done["processingStatus"] == "completed", done
    assert [k for k in bucket_keys(s3_server, s3_settings) if "/references/" in k] == []
    assert not (api.services.settings.data_dir / "files").exists()
