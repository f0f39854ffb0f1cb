"""The `Storage` protocol, one contract for both backends: a local folder and an
object store (a real S3 server, `tests.s3`, through obstore)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bananastand.errors import StorageUnavailable
from bananastand.object_storage import ObjectStorage
from bananastand.storage import LocalStorage, Storage
from tests.s3 import ACCESS_KEY, SECRET_KEY, S3Server, free_port

DATA = bytes(range(256)) * 1024  # 256 KiB: streamed in several pieces


def s3_storage(server: S3Server, bucket: str, **overrides: object) -> ObjectStorage:
    options: dict[str, object] = {
        "endpoint": server.endpoint,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "timeout_seconds": 5.0,
        **overrides,
    }
    return ObjectStorage.from_url(f"s3://{bucket}/prefix", **options)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        store: Storage = LocalStorage(tmp_path / "files")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = s3_storage(server, server.bucket())
    yield store
    await store.aclose()


def make_old(storage: Storage, keys: list[str], seconds: float) -> None:
    """Make these objects `seconds` older than they are (a file's mtime; for a
    bucket, whose write times are the server's, the store's clock moves on)."""
    if isinstance(storage, LocalStorage):
        for key in keys:
            path = storage.path(key)
            assert path is not None
            when = time.time() - seconds
            os.utime(path, (when, when))
    else:
        assert isinstance(storage, ObjectStorage)
        later: Callable[[], float] = lambda: time.time() + seconds  # noqa: E731
        storage.clock = later


async def read(storage: Storage, key: str, **span: int) -> tuple[bytes, int, int, int]:
    blob = await storage.open(key, **span)
    assert blob is not None
    pieces = [piece async for piece in blob.chunks]
    assert all(pieces)
    return b"".join(pieces), blob.start, blob.end, blob.stat.size


async def test_put_then_read_back_whole_stat_and_stream(storage: Storage) -> None:
    await storage.put("images/ab/abc.png", DATA)
    assert await storage.get("images/ab/abc.png") == DATA
    stat = await storage.stat("images/ab/abc.png")
    assert stat is not None and stat.size == len(DATA)
    assert abs(stat.mtime - time.time()) < 120
    body, start, end, size = await read(storage, "images/ab/abc.png")
    assert body == DATA and (start, end, size) == (0, len(DATA), len(DATA))


async def test_overwriting_replaces_the_whole_object(storage: Storage) -> None:
    await storage.put("references/g/0.bin", DATA)
    await storage.put("references/g/0.bin", b"short")
    assert await storage.get("references/g/0.bin") == b"short"
    assert (await storage.stat("references/g/0.bin")).size == 5  # type: ignore[union-attr]


async def test_ranges(storage: Storage) -> None:
    await storage.put("images/ab/r.png", DATA)
    assert await read(storage, "images/ab/r.png", start=10, end=20) == (
        DATA[10:20],
        10,
        20,
        len(DATA),
    )
    body, start, end, _ = await read(storage, "images/ab/r.png", start=len(DATA) - 7)
    assert body == DATA[-7:] and (start, end) == (len(DATA) - 7, len(DATA))


async def test_missing_objects_are_none_never_an_error(storage: Storage) -> None:
    assert await storage.get("images/zz/none.png") is None
    assert await storage.stat("images/zz/none.png") is None
    assert await storage.open("images/zz/none.png") is None
    await storage.delete("images/zz/none.png")  # nothing to delete: fine


async def test_delete_many_at_once(storage: Storage) -> None:
    keys = [f"images/d{i % 3}/k{i}.png" for i in range(12)]
    for key in keys:
        await storage.put(key, b"x")
    await storage.put("images/keep/k.png", b"kept")
    await storage.delete(*keys, "images/never/there.png")
    for key in keys:
        assert await storage.stat(key) is None
    assert await storage.get("images/keep/k.png") == b"kept"
    await storage.delete()  # no keys: nothing happens


async def test_stale_lists_only_old_keys_under_the_prefix(storage: Storage) -> None:
    await storage.put("images/ab/old.png", b"1")
    await storage.put("references/g1/0.bin", b"2")
    assert await storage.stale("images", older_than=3600) == []
    make_old(storage, ["images/ab/old.png", "references/g1/0.bin"], 7200)
    assert await storage.stale("images", older_than=3600) == ["images/ab/old.png"]
    assert await storage.stale("references", older_than=3600) == ["references/g1/0.bin"]
    assert await storage.stale("images", older_than=86400) == []


async def test_items_lists_keys_with_their_sizes(storage: Storage) -> None:
    await storage.put("images/ab/one.png", b"1")
    await storage.put("images/cd/two.png", b"22")
    await storage.put("references/g/0.bin", b"333")
    found = {key: stat.size async for key, stat in storage.items("images")}
    assert found == {"images/ab/one.png": 1, "images/cd/two.png": 2}


async def test_presigned_urls_only_where_the_store_has_them(storage: Storage) -> None:
    await storage.put("images/ab/signed.png", DATA)
    url = await storage.presigned_url("images/ab/signed.png", expires_in=60)
    if isinstance(storage, LocalStorage):
        assert url is None
        return
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=60&" in url
    assert SECRET_KEY not in url
    async with httpx.AsyncClient() as client:
        fetched = await client.get(url)
        assert fetched.status_code == 200
        assert fetched.content == DATA
        assert fetched.headers["content-type"] == "image/png"


# --- an object store that cannot be reached ----------------------------------------


async def test_an_unreachable_store_is_unavailable_logged_once_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = ObjectStorage.from_url(
        "s3://some-bucket/prefix",
        endpoint=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        timeout_seconds=2,
    )
    calls = [
        down.put("images/ab/x.png", b"x"),
        down.get("images/ab/x.png"),
        down.stat("images/ab/x.png"),
        down.open("images/ab/x.png"),
        down.delete("images/ab/x.png"),
        down.stale("images", older_than=0),
    ]
    with caplog.at_level(logging.INFO):
        for call in calls:
            with pytest.raises(StorageUnavailable) as raised:
                await call
            assert raised.value.status == 503 and raised.value.headers["Retry-After"]
            assert "127.0.0.1" not in raised.value.message
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1, caplog.text  # once per outage, not once per call
    assert SECRET_KEY not in caplog.text and ACCESS_KEY not in caplog.text


async def test_an_outage_ends_when_the_store_is_back(caplog: pytest.LogCaptureFixture) -> None:
    server = S3Server().start()
    try:
        bucket = server.bucket()
        store = s3_storage(server, bucket, timeout_seconds=2)
        await store.put("images/ab/x.png", b"before")
        server.stop()
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                with pytest.raises(StorageUnavailable):
                    await store.get("images/ab/x.png")
            server = S3Server(server.port).start()  # the same address, empty again
            server.bucket(bucket)
            await store.put("images/ab/x.png", b"after")
            assert await store.get("images/ab/x.png") == b"after"
        messages = [r.getMessage() for r in caplog.records if r.name == "bananastand.storage"]
        assert len(messages) == 2, messages
        assert "unavailable" in messages[0] and "reachable again" in messages[1]
    finally:
        server.stop()


async def test_a_bucket_that_does_not_exist_refuses_writes(s3_server: S3Server) -> None:
    store = s3_storage(s3_server, "no-such-bucket-here")
    with pytest.raises(StorageUnavailable):
        await store.put("images/ab/x.png", b"x")
    assert await store.get("images/ab/x.png") is None


# --- settings ------------------------------------------------------------------------


def test_scale_out_on_a_bucket_needs_one_signing_secret(tmp_path: Path) -> None:
    from bananastand.config import Settings

    def settings(**values: object) -> Settings:
        base: dict[str, object] = {
            "data_dir": tmp_path,
            "database_url": "postgresql+psycopg://db/x",
            "redis_url": "redis://127.0.0.1:6379/0",
            "storage_url": "s3://bucket/prefix",
        }
        return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]

    with pytest.raises(ValueError, match="BANANASTAND_SIGNING_SECRET"):
        settings().check_mode()
    settings(signing_secret="s" * 32).check_mode()
    settings(storage_url="").check_mode()  # one machine, one data folder: its own key


def test_the_secret_key_is_never_in_the_settings_repr(tmp_path: Path) -> None:
    from bananastand.config import Settings

    shown = repr(
        Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=tmp_path, storage_secret_access_key=SECRET_KEY
        )
    )
    assert SECRET_KEY not in shown
