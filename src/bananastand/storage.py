"""Image bytes and their signed, expiring URLs.

An image URL looks like `{public_base_url}/images/{expires}/{signature}/{id}.png`:
the id is random (unguessable), the expiry is part of what the HMAC signs (so
it cannot be stretched), and the last path segment is the file name with its
extension. Storage backends are a small protocol; `LocalStorage` keeps files
under a folder.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Protocol

from bananastand import thumbnails
from bananastand.errors import Gone, NotFound

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class Storage(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...
    def path(self, key: str) -> Path | None: ...
    async def delete(self, key: str) -> None: ...
    async def stale(self, prefix: str, *, older_than: float) -> list[str]: ...


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
        import anyio

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
        target = self._file(key)
        return target if target.is_file() else None

    async def delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    async def stale(self, prefix: str, *, older_than: float) -> list[str]:
        """Keys under `prefix` last written more than `older_than` seconds ago
        (half-written temporary files included)."""
        import anyio

        return await anyio.to_thread.run_sync(self._stale, prefix, older_than)

    def _stale(self, prefix: str, older_than: float) -> list[str]:
        cutoff = time.time() - older_than
        keys = []
        for path in self._file(prefix).rglob("*"):
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                if path.is_file() and path.stat().st_mtime < cutoff:
                    keys.append(path.relative_to(self.root).as_posix())
        return keys


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
