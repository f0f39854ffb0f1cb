"""Image URLs: absolute, signed, expiring (410 then bytes deleted), proper headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bananastand.storage import UrlSigner, image_key
from tests.support import BOTH_DEPLOYMENTS, Api

pytestmark = BOTH_DEPLOYMENTS


async def _one_image(api: Api) -> tuple[str, dict]:  # type: ignore[type-arg]
    key = await api.account()
    body = (await api.generate(key, prompt="a tram in the rain")).json()
    return body["imageUrls"][0], body


async def test_urls_are_absolute_signed_and_end_with_the_extension(api: Api) -> None:
    url, _ = await _one_image(api)
    assert url.startswith("https://images.example.test/images/")
    expires, signature, filename = url.rsplit("/", 3)[1:]
    assert filename.endswith(".png")
    assert len(filename) >= 24 + 4  # random id, 144 bits
    assert int(expires) > datetime.now(UTC).timestamp() + 14.9 * 86400
    assert len(signature) >= 22


async def test_image_is_served_with_type_and_cache_headers(api: Api) -> None:
    url, _ = await _one_image(api)
    response = await api.download(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "max-age=" in response.headers["cache-control"]
    max_age = int(response.headers["cache-control"].split("max-age=")[1].split(",")[0])
    assert 14 * 86400 < max_age <= 15 * 86400
    assert response.content.startswith(b"\x89PNG")


async def test_forged_or_stretched_urls_are_404(api: Api) -> None:
    url, _ = await _one_image(api)
    base, expires, signature, filename = url.rsplit("/", 3)
    later = str(int(expires) + 86400 * 365)
    for forged in (
        f"{base}/{later}/{signature}/{filename}",  # longer lifetime
        f"{base}/{expires}/{signature[:-2]}AA/{filename}",  # bad signature
        f"{base}/{expires}/{signature}/{'x' * 24}.png",  # other id
        f"{base}/{expires}/{signature}/{filename[:-4]}.jpg",  # other extension
    ):
        response = await api.download(forged)
        assert response.status_code == 404, forged
        assert response.json()["type"] == "not_found"


async def test_odd_image_paths_are_404_never_a_server_error(api: Api) -> None:
    url, _ = await _one_image(api)
    base, expires, signature, filename = url.rsplit("/", 3)
    for odd in (
        f"{base}/²/{signature}/{filename}",  # a Unicode digit
        f"{base}/{'9' * 5000}/{signature}/{filename}",  # past int()'s digit limit
        f"{base}/-1/{signature}/{filename}",
        f"{base}/{expires}/sïgnature/{filename}",  # not ASCII
        f"{base}/{expires}/{signature}/noextension",
        f"{base}/{expires}/{signature}/{filename}.png",
        f"{base}/{expires}/%00/{filename}",
    ):
        response = await api.download(odd)
        assert response.status_code == 404, odd
        assert response.json()["type"] == "not_found"


async def test_expired_url_is_410(api: Api) -> None:
    url, _ = await _one_image(api)
    filename = url.rsplit("/", 1)[1]
    image_id, extension = filename.split(".")
    signer: UrlSigner = api.services.generation.signer
    past = signer.url(image_id, extension, datetime.now(UTC) - timedelta(seconds=1))
    response = await api.download(past)
    assert response.status_code == 410
    assert response.json()["type"] == "expired"


async def test_expired_images_are_swept_from_disk(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(image_ttl_seconds=0)
    key = await api.account()
    body = (await api.generate(key, prompt="gone soon")).json()
    url = body["imageUrls"][0]
    image_id, extension = url.rsplit("/", 1)[1].split(".")
    storage = api.services.generation.storage
    assert storage.path(image_key(image_id, extension)) is not None
    assert (await api.download(url)).status_code == 410
    assert await api.services.generation.sweep_expired() == 1
    assert storage.path(image_key(image_id, extension)) is None
    assert await api.services.generation.sweep_expired() == 0
    record = await api.poll(key, body["generationId"])
    assert record["outputImageUrls"] == [url]  # still listed; answers 410


async def test_orphaned_image_files_are_swept_once_old(api: Api) -> None:
    """Bytes stored by a run that never settled (its process died) are deleted
    once older than any run can last; images with a record are kept."""
    import os
    import time

    key = await api.account()
    url = (await api.generate(key, prompt="kept")).json()["imageUrls"][0]
    kept_id, extension = url.rsplit("/", 1)[1].split(".")
    storage = api.services.generation.storage
    orphan = image_key("orphanorphanorphan01", "png")
    recent = image_key("orphanorphanorphan02", "png")
    await storage.put(orphan, b"never settled")
    await storage.put(recent, b"still running, maybe")
    long_ago = time.time() - 3 * 86400
    for key_ in (orphan, image_key(kept_id, extension)):
        path = storage.path(key_)
        assert path is not None
        os.utime(path, (long_ago, long_ago))
    assert await api.services.generation.sweep_orphans() == 1
    assert storage.path(orphan) is None
    assert storage.path(recent) is not None
    assert storage.path(image_key(kept_id, extension)) is not None
    assert (await api.download(url)).status_code == 200


async def test_ttl_is_configurable(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(image_ttl_seconds=3600)
    url, _ = await _one_image(api)
    expires = int(url.rsplit("/", 3)[1])
    assert abs(expires - (datetime.now(UTC).timestamp() + 3600)) < 60


async def test_head_answers_like_get_without_a_body(api: Api) -> None:
    url, _ = await _one_image(api)
    base = api.services.settings.base_url
    response = await api.client.head(url[len(base) :])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == b""


async def test_revalidation_with_the_etag_is_304(api: Api) -> None:
    url, _ = await _one_image(api)
    first = await api.download(url)
    etag = first.headers["etag"]
    base = api.services.settings.base_url
    again = await api.client.get(url[len(base) :], headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    other = await api.client.get(url[len(base) :], headers={"If-None-Match": '"other"'})
    assert other.status_code == 200
