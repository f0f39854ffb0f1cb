"""Thumbnails: made when a generation's images are stored (by the worker too),
served under the image's own signed URL with `?size=thumb`, as valid as the
image and no longer, deleted with it; old images get one when first asked."""

from __future__ import annotations

import asyncio
import io
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from bananastand import thumbnails
from bananastand.storage import UrlSigner, image_key, thumb_key
from tests.support import BOTH_DEPLOYMENTS, Api


async def _one_image(api: Api, **body: object) -> tuple[str, str, str]:
    """(image URL, image id, extension) of a fresh generation's first image."""
    key = await api.account()
    answer = await api.generate(key, prompt="a tram in the rain", **body)
    assert answer.status_code == 200, answer.text
    url = answer.json()["imageUrls"][0]
    image_id, extension = url.rsplit("/", 1)[1].split(".")
    return url, image_id, extension


@BOTH_DEPLOYMENTS
async def test_a_stored_image_gets_a_small_thumbnail_served_under_its_url(api: Api) -> None:
    url, image_id, _ = await _one_image(api, aspectRatio="1:1")
    assert "?" not in url and "thumb" not in url  # the API's URLs are unchanged
    storage = api.services.generation.storage
    # Not made on the generation's hot path: the first look makes it.
    assert storage.path(thumb_key(image_id)) is None
    full = await api.download(url)
    thumb = await api.download(url + "?size=thumb")
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == thumbnails.MIME
    assert len(thumb.content) < 20_000 < len(full.content)
    with Image.open(io.BytesIO(full.content)) as image:
        assert image.size == (1024, 1024)
    with Image.open(io.BytesIO(thumb.content)) as picture:
        assert picture.size == (256, 256)
        assert picture.format == thumbnails.FORMAT
    # Cached as long as the image is valid, revalidated by its own tag.
    ages = [int(r.headers["cache-control"].split("=")[1].split(",")[0]) for r in (full, thumb)]
    assert abs(ages[0] - ages[1]) <= 1 and ages[0] > 14 * 86400
    assert thumb.headers["cache-control"].endswith(", immutable")
    assert thumb.headers["etag"] != full.headers["etag"]


async def test_a_thumbnail_is_refused_exactly_like_its_image(api: Api) -> None:
    url, image_id, extension = await _one_image(api)
    base, expires, signature, filename = url.rsplit("/", 3)
    later = str(int(expires) + 86400 * 365)
    for forged in (
        f"{base}/{later}/{signature}/{filename}?size=thumb",  # longer lifetime
        f"{base}/{expires}/{signature[:-2]}AA/{filename}?size=thumb",  # bad signature
        f"{base}/{expires}/{signature}/{image_id}.thumb.webp?size=thumb",  # its own name
        f"{url}?size=huge",  # no such rendition
    ):
        response = await api.download(forged)
        assert response.status_code == 404, forged
        assert response.json()["type"] == "not_found"
    signer: UrlSigner = api.services.generation.signer
    past = signer.url(image_id, extension, datetime.now(UTC) - timedelta(seconds=1))
    expired = await api.download(past + "?size=thumb")
    assert expired.status_code == 410
    assert expired.json()["type"] == "expired"


async def test_head_and_revalidation_work_like_the_image(api: Api) -> None:
    url, _, _ = await _one_image(api)
    path = url[len(api.services.settings.base_url) :] + "?size=thumb"
    head = await api.client.head(path)
    assert head.status_code == 200
    assert head.headers["content-type"] == thumbnails.MIME
    assert head.content == b""
    etag = (await api.client.get(path)).headers["etag"]
    again = await api.client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    image_etag = (await api.download(url)).headers["etag"]
    other = await api.client.get(path, headers={"If-None-Match": image_etag})
    assert other.status_code == 200  # the image's tag is not the thumbnail's


async def test_a_thumbnail_is_made_at_first_look_then_served_from_storage(api: Api) -> None:
    url, image_id, _ = await _one_image(api)
    storage = api.services.generation.storage
    assert storage.path(thumb_key(image_id)) is None
    thumb = await api.download(url + "?size=thumb")
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == thumbnails.MIME
    assert len(thumb.content) < 20_000
    kept = storage.path(thumb_key(image_id))
    assert kept is not None and kept.read_bytes() == thumb.content  # made once, kept
    kept.write_bytes(b"the stored rendition")  # served from storage, not made again
    assert (await api.download(url + "?size=thumb")).content == b"the stored rendition"


async def test_many_asking_at_once_make_one_thumbnail_kept_when_they_leave(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, image_id, extension = await _one_image(api)
    store = api.services.thumbnails
    started, release = asyncio.Event(), asyncio.Event()
    made: list[int] = []
    real_make = thumbnails.make_async

    async def slow_make(source: bytes) -> bytes:
        made.append(len(source))
        started.set()
        await release.wait()
        return await real_make(source)

    monkeypatch.setattr(thumbnails, "make_async", slow_make)
    key = image_key(image_id, extension)
    askers = [asyncio.create_task(store.key_for(image_id, key)) for _ in range(5)]
    await started.wait()
    for asker in askers:  # every request that asked goes away
        asker.cancel()
    await asyncio.gather(*askers, return_exceptions=True)
    release.set()
    kept = await store.key_for(image_id, key)  # waits for the one being made
    assert kept == thumb_key(image_id)
    assert len(made) == 1
    path = api.services.generation.storage.path(kept)
    assert path is not None
    with Image.open(path) as picture:  # kept, though everyone who asked had gone
        assert picture.format == thumbnails.FORMAT
    assert (await api.download(url + "?size=thumb")).status_code == 200
    assert len(made) == 1  # served from storage, not made again


async def test_an_image_that_cannot_be_shrunk_is_served_whole(api: Api) -> None:
    url, image_id, extension = await _one_image(api)
    storage = api.services.generation.storage
    await storage.delete(thumb_key(image_id))
    await storage.put(image_key(image_id, extension), b"not an image at all")
    answer = await api.download(url + "?size=thumb")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    assert answer.content == b"not an image at all"
    assert storage.path(thumb_key(image_id)) is None


async def test_thumbnails_are_swept_with_their_images(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(image_ttl_seconds=0)
    url, image_id, extension = await _one_image(api)
    storage = api.services.generation.storage
    await storage.put(thumb_key(image_id), b"as made by an earlier look")
    assert (await api.download(url + "?size=thumb")).status_code == 410
    assert await api.services.generation.sweep_expired() == 1
    assert storage.path(image_key(image_id, extension)) is None
    assert storage.path(thumb_key(image_id)) is None


async def test_orphaned_thumbnails_are_swept_once_old(api: Api) -> None:
    kept_url, kept_id, _ = await _one_image(api)
    assert (await api.download(kept_url + "?size=thumb")).status_code == 200
    storage = api.services.generation.storage
    orphan = thumb_key("orphanorphanorphan03")
    await storage.put(orphan, b"a thumbnail of nothing")
    long_ago = time.time() - 3 * 86400
    for key in (orphan, thumb_key(kept_id)):
        path = storage.path(key)
        assert path is not None
        os.utime(path, (long_ago, long_ago))
    assert await api.services.generation.sweep_orphans() == 1
    assert storage.path(orphan) is None
    assert storage.path(thumb_key(kept_id)) is not None


@pytest.mark.parametrize(
    ("mode", "size", "fmt"),
    [("RGB", (1024, 1536), "JPEG"), ("RGBA", (300, 120), "PNG"), ("P", (100, 80), "PNG")],
)
def test_make_shrinks_any_stored_kind_never_enlarging(
    mode: str, size: tuple[int, int], fmt: str
) -> None:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt)
    made = thumbnails.make(buffer.getvalue())
    with Image.open(io.BytesIO(made)) as picture:
        assert picture.format == thumbnails.FORMAT
        assert picture.size == thumbnails.size(*size)
        assert max(picture.size) == min(thumbnails.MAX_SIDE, max(size))
