"""Image bytes and their signed, expiring URLs.

An image URL looks like `{public_base_url}/images/{expires}/{signature}/{id}.png`:
the id is random (unguessable), the expiry is part of what the HMAC signs (so
it cannot be stretched), and the last path segment is the file name with its
extension.

Where the bytes live is a small protocol, `Storage`, with two backends:
`LocalStorage` (files under a folder, the embedded default) and
`object_storage.ObjectStorage` (an S3-compatible bucket, or GCS or Azure, for
processes on several machines). `open_storage(settings)` picks one. Every
method is async; a store that cannot be reached raises
`errors.StorageUnavailable` (503), a missing object is `None`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from bananastand import thumbnails
from bananastand.errors import Gone, NotFound

if TYPE_CHECKING:
    from bananastand.config import Settings

log = logging.getLogger(__name__)

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
CHUNK = 64 * 1024  # bytes per piece of a streamed object


@dataclass(frozen=True)
class Stat:
    """What a store knows of one object: its size, last write (epoch seconds)."""

    size: int
    mtime: float


@dataclass(frozen=True)
class Blob:
    """An object opened for streaming: bytes `start` up to (not including) `end`
    of an object of `stat.size` bytes, read piece by piece from `chunks`."""

    stat: Stat
    start: int
    end: int
    chunks: AsyncIterator[bytes]


class Storage(Protocol):
    """Where images, thumbnails and stored reference images live, by key
    (`images/ab/abc….png`, `references/{generation}/0.bin`)."""

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` whole under `key` (readers never see half of it)."""

    async def get(self, key: str) -> bytes | None:
        """The object's bytes (small objects: references, thumbnails' sources)."""

    async def stat(self, key: str) -> Stat | None: ...

    async def open(self, key: str, *, start: int = 0, end: int | None = None) -> Blob | None:
        """The object (or bytes `start`..`end` of it) for streaming; None if missing."""

    async def delete(self, *keys: str) -> None:
        """Delete these objects (in batches where the store has them); missing
        ones are fine."""

    async def stale(self, prefix: str, *, older_than: float) -> list[str]:
        """Keys under `prefix` last written more than `older_than` seconds ago."""

    def items(self, prefix: str) -> AsyncIterator[tuple[str, Stat]]:
        """Every key under `prefix` with its `Stat` (for copying a store)."""

    async def presigned_url(self, key: str, *, expires_in: float) -> str | None:
        """A short-lived URL of the store itself for `key`; None if it has none."""

    async def aclose(self) -> None: ...


class Outage:
    """Logs a store's outage once when it starts and once when it ends, not once
    per request (the janitor does the same for Redis and the database)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False

    def failed(self, error: BaseException) -> None:
        if not self.down:
            self.down = True
            # The error's type only: its text may name the endpoint or a request.
            log.warning(
                "%s unavailable (%s); answering 503 until it is back",
                self.name,
                type(error).__name__,
            )

    def worked(self) -> None:
        if self.down:
            self.down = False
            log.info("%s reachable again", self.name)


class LocalStorage:
    """Files under one folder; writes are atomic and durable (temp file, fsync,
    rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _file(self, key: str) -> Path:
        if ".." in key or key.startswith("/"):
            raise ValueError("bad storage key")
        return self.root / key

    async def put(self, key: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._put, key, data)

    def _put(self, key: str, data: bytes) -> None:
        # Durable before the record that names it commits: written whole under a
        # temporary name and flushed to disk, renamed, and the rename flushed too.
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def path(self, key: str) -> Path | None:
        """The file of `key` (this backend only: tests and tools that touch files)."""
        target = self._file(key)
        return target if target.is_file() else None

    async def get(self, key: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                return self._file(key).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None

        return await anyio.to_thread.run_sync(read)

    async def stat(self, key: str) -> Stat | None:
        return await anyio.to_thread.run_sync(self._stat, key)

    def _stat(self, key: str) -> Stat | None:
        try:
            found = self._file(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(self._file(key)):
            return None
        return Stat(size=found.st_size, mtime=found.st_mtime)

    async def open(self, key: str, *, start: int = 0, end: int | None = None) -> Blob | None:
        # Opened now (a file deleted later still reads whole), read as it is sent.
        try:
            file = await anyio.open_file(self._file(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        found = os.fstat(file.wrapped.fileno())
        stop = found.st_size if end is None else min(end, found.st_size)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                await file.seek(start)
                left = stop - start
                while left > 0:
                    piece = await file.read(min(CHUNK, left))
                    if not piece:
                        break
                    left -= len(piece)
                    yield piece
            finally:  # read to the end or not (a client gone)
                await file.aclose()

        return Blob(Stat(found.st_size, found.st_mtime), start, stop, chunks())

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._file(key).unlink(missing_ok=True)

    async def stale(self, prefix: str, *, older_than: float) -> list[str]:
        """Keys under `prefix` last written more than `older_than` seconds ago
        (half-written temporary files included)."""
        return await anyio.to_thread.run_sync(self._stale, prefix, older_than)

    def _stale(self, prefix: str, older_than: float) -> list[str]:
        cutoff = time.time() - older_than
        keys = []
        for path in self._file(prefix).rglob("*"):
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                if path.is_file() and path.stat().st_mtime < cutoff:
                    keys.append(path.relative_to(self.root).as_posix())
        return keys

    async def items(self, prefix: str) -> AsyncIterator[tuple[str, Stat]]:
        def walk() -> list[tuple[str, Stat]]:
            found = []
            for path in sorted(self._file(prefix).rglob("*")):
                with contextlib.suppress(FileNotFoundError):
                    if path.is_file() and not path.name.startswith("."):  # no temp files
                        info = path.stat()
                        key = path.relative_to(self.root).as_posix()
                        found.append((key, Stat(info.st_size, info.st_mtime)))
            return found

        for item in await anyio.to_thread.run_sync(walk):
            yield item

    async def presigned_url(self, key: str, *, expires_in: float) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


@dataclass
class CopyReport:
    copied: int = 0
    already: int = 0  # there before, with the same bytes
    failed: list[str] = field(default_factory=list)


async def copy_all(
    source: Storage,
    target: Storage,
    *,
    prefixes: tuple[str, ...] = ("images", "references"),
    concurrency: int = 8,
    progress: Callable[[CopyReport], None] | None = None,
) -> CopyReport:
    """Copy every object under `prefixes` from `source` to `target`, each read back
    and compared (SHA-256) before it counts. Idempotent and resumable: objects
    already in the target with the same bytes are left alone, so a run that was
    stopped is simply run again."""
    report = CopyReport()

    async def one(key: str) -> None:
        data = await source.get(key)
        if data is None:  # deleted since it was listed (the sweeper)
            return
        digest = hashlib.sha256(data).digest()
        there = await target.stat(key)
        if there is not None and there.size == len(data):
            existing = await target.get(key)
            if existing is not None and hashlib.sha256(existing).digest() == digest:
                report.already += 1
                return
        await target.put(key, data)
        back = await target.get(key)
        if back is None or hashlib.sha256(back).digest() != digest:
            report.failed.append(key)
        else:
            report.copied += 1

    # `concurrency` objects at a time, as the listing streams in (never all of it).
    batch: list[str] = []
    batches = 0
    for prefix in prefixes:
        async for key, _ in source.items(prefix):
            batch.append(key)
            if len(batch) == concurrency:
                await asyncio.gather(*(one(k) for k in batch))
                batch.clear()
                batches += 1
                if progress is not None and batches % 64 == 0:
                    progress(report)
    await asyncio.gather(*(one(k) for k in batch))
    report.failed.sort()
    return report


def open_storage(settings: Settings) -> Storage:
    """The store the settings name: a bucket for `storage_url`, else files under
    `data_dir/files`."""
    if settings.storage_url:
        from bananastand.object_storage import ObjectStorage

        return ObjectStorage.from_settings(settings)
    return LocalStorage(settings.data_dir / "files")


def content_type(key: str) -> str:
    """The media type an object is stored with (what a presigned URL serves)."""
    extension = key.rsplit(".", 1)[-1]
    return {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}.get(
        extension, "application/octet-stream"
    )


def image_key(image_id: str, extension: str) -> str:
    return f"images/{image_id[:2]}/{image_id}.{extension}"


def thumb_key(image_id: str) -> str:
    """An image's thumbnail (see `thumbnails`), next to it: the orphan sweep reads
    its image id like the image's own."""
    return f"images/{image_id[:2]}/{image_id}.thumb.{thumbnails.EXTENSION}"


def key_image_id(key: str) -> str:
    """The image id in an `image_key` or `thumb_key` (a temporary file's name gives
    no known id)."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


class UrlSigner:
    def __init__(self, secret: bytes, base_url: str) -> None:
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        # An image's URL never changes (its expiry is fixed): polls of finished
        # generations ask for the same few URLs again and again.
        self.url = functools.lru_cache(maxsize=20_000)(self._url)  # type: ignore[method-assign]

    def _signature(self, filename: str, expires: int) -> str:
        mac = hmac.new(self._secret, f"{filename}:{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")

    def url(self, image_id: str, extension: str, expires_at: datetime) -> str:
        return self._url(image_id, extension, expires_at)

    def _url(self, image_id: str, extension: str, expires_at: datetime) -> str:
        filename = f"{image_id}.{extension}"
        expires = int(expires_at.timestamp())
        return f"{self.base_url}/images/{expires}/{self._signature(filename, expires)}/{filename}"

    def verify(self, expires: str, signature: str, filename: str, *, now: float) -> tuple[str, str]:
        """Check a URL's parts; return (image id, extension) or raise 404/410."""
        # ASCII digits only (`isdigit` also takes "²"), and no longer than any real
        # expiry: whatever else a path holds is simply not an image here.
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            raise NotFound("No such image")
        if "." not in filename:
            raise NotFound("No such image")
        expected = self._signature(filename, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise NotFound("No such image")
        if int(expires) <= now:
            raise Gone("This image URL has expired")
        image_id, _, extension = filename.rpartition(".")
        return image_id, extension


async def read_own_image(signer: UrlSigner, storage: Storage, url: str) -> bytes | None:
    """The bytes behind one of this server's own image URLs (`UrlSigner.url`), read
    from storage and checked as `GET` checks them (`NotFound`, `Gone`); None for
    any other URL. So a client can pass back an image it was given as a reference,
    however private the address it reaches this server at."""
    prefix = f"{signer.base_url}/images/"
    if not url.startswith(prefix):
        return None
    parts = url[len(prefix) :].partition("?")[0].split("/")
    if len(parts) != 3:
        raise NotFound("No such image")
    image_id, extension = signer.verify(*parts, now=time.time())
    data = await storage.get(image_key(image_id, extension))
    if data is None:
        raise NotFound("No such image")
    return data


def load_or_create_secret(configured: str, data_dir: Path) -> bytes:
    """The signing secret: configured, or generated once and kept in the data dir."""
    if configured:
        return configured.encode()
    path = data_dir / "signing.key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48).encode()
    # Written whole under a temporary name, then linked in: processes starting
    # together agree on one secret and never read a half-written file.
    tmp = data_dir / f".signing.key.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    try:
        os.link(tmp, path)
    except FileExistsError:
        secret = path.read_bytes().strip()
    finally:
        tmp.unlink()
    return secret
