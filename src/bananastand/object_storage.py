"""`ObjectStorage`: the `storage.Storage` protocol on an object store, so API
processes and workers on different machines share a bucket instead of a disk.

Built on obstore (Python bindings of the Rust `object_store` crate): S3 and
S3-compatible services (MinIO, R2, Ceph), Google Cloud Storage and Azure Blob
from one URL (`s3://bucket/prefix`, `gs://…`, `az://…`), with batched deletes,
ranged streaming reads and presigned URLs. The README's "Object storage"
section says why this library (measured against aioboto3).

Errors: a missing object is `None` (the callers answer 404); anything else the
store says (unreachable, timed out, credentials refused) raises
`StorageUnavailable` (503 with Retry-After), logged once per outage. The store's
own message never reaches a client: it may name the endpoint or the bucket.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import AzureStore, GCSStore, S3Store, from_url

from bananastand.errors import StorageUnavailable
from bananastand.storage import CHUNK, Blob, Outage, Stat, content_type

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

    from bananastand.config import Settings

T = TypeVar("T")

# obstore raises the builtin for a missing object (its own class in some versions).
MISSING = (FileNotFoundError, NotFoundError)


class ObjectStorage:
    def __init__(
        self, store: ObjectStore, *, name: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.name = name  # for logs: the URL without credentials
        self.outage = Outage(f"object storage {name}")
        self.clock = clock  # tests move it to make objects old

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStorage:
        return cls.from_url(
            settings.storage_url,
            endpoint=settings.storage_endpoint,
            region=settings.storage_region,
            access_key_id=settings.storage_access_key_id,
            secret_access_key=settings.storage_secret_access_key.get_secret_value(),
            timeout_seconds=settings.storage_timeout_seconds,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        timeout_seconds: float = 10.0,
    ) -> ObjectStorage:
        """A store for `url`; empty credentials: the library's usual sources
        (`AWS_*` variables, instance roles, `GOOGLE_APPLICATION_CREDENTIALS`, …)."""
        config: dict[str, Any] = {}
        if url.startswith(("s3://", "s3a://")):
            if endpoint:
                # S3-compatible services answer on one host, bucket in the path.
                config["endpoint"] = endpoint
                config["virtual_hosted_style_request"] = False
            if region:
                config["region"] = region
            elif endpoint:
                config["region"] = "us-east-1"  # what S3-compatible services expect
            if access_key_id:
                config["access_key_id"] = access_key_id
            if secret_access_key:
                config["secret_access_key"] = secret_access_key
        timeout = timedelta(seconds=timeout_seconds)
        client: ClientConfig = {
            "timeout": timeout,
            "connect_timeout": timedelta(seconds=min(timeout_seconds, 3.0)),
            "allow_http": endpoint.startswith("http://"),
        }
        # Retried briefly: an outage answers 503 within the timeout instead of
        # holding requests for the library's default of minutes.
        retry: RetryConfig = {
            "max_retries": 2,
            "retry_timeout": timeout,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=1),
                "base": 2,
            },
        }
        store = from_url(url, config=config, client_options=client, retry_config=retry)  # type: ignore[call-overload]
        return cls(store, name=url.split("?", 1)[0])

    # --- calls ----------------------------------------------------------------
    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            result = await operation
        except MISSING:
            self.outage.worked()
            raise
        except (BaseError, OSError) as exc:  # unreachable, timed out, refused
            self.outage.failed(exc)
            raise StorageUnavailable() from None
        self.outage.worked()
        return result

    async def put(self, key: str, data: bytes) -> None:
        # One request for an image (multipart only above 5 MiB).
        write = obstore.put_async(
            self.store, key, data, attributes={"Content-Type": content_type(key)}
        )
        try:
            await self._call(write)
        except MISSING as exc:  # no such bucket: as good as no store at all
            self.outage.failed(exc)
            raise StorageUnavailable() from None

    async def get(self, key: str) -> bytes | None:
        try:
            result = await self._call(obstore.get_async(self.store, key))
            return bytes(await self._call(result.bytes_async()))
        except MISSING:
            return None

    async def stat(self, key: str) -> Stat | None:
        try:
            meta = await self._call(obstore.head_async(self.store, key))
        except MISSING:
            return None
        return _stat(meta)

    async def open(self, key: str, *, start: int = 0, end: int | None = None) -> Blob | None:
        """One GET; the body streams as it is sent (never read whole)."""
        options: dict[str, Any] = {}
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await self._call(obstore.get_async(self.store, key, options=options))  # type: ignore[arg-type]
        except MISSING:
            return None
        first, stop = result.range
        stream = result.stream(min_chunk_size=CHUNK)

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                try:
                    piece = await self._call(stream.__anext__())
                except StopAsyncIteration:
                    return
                yield bytes(piece)

        return Blob(_stat(result.meta), first, stop, chunks())

    async def delete(self, *keys: str) -> None:
        """Batched: S3 deletes up to 1,000 objects a request, Azure 256."""
        if keys:
            await self._call(obstore.delete_async(self.store, list(keys)))

    async def stale(self, prefix: str, *, older_than: float) -> list[str]:
        cutoff = self.clock() - older_than
        return [key async for key, stat in self.items(prefix) if stat.mtime < cutoff]

    async def items(self, prefix: str) -> AsyncIterator[tuple[str, Stat]]:
        pages = obstore.list(self.store, prefix, chunk_size=1000)
        while True:
            try:
                page = await self._call(pages.__anext__())
            except StopAsyncIteration:
                return
            for meta in page:
                yield meta["path"], _stat(meta)

    async def presigned_url(self, key: str, *, expires_in: float) -> str | None:
        if not isinstance(self.store, S3Store | GCSStore | AzureStore):
            return None
        # Signing is local (no request), so an outage shows on the client's GET.
        return await self._call(
            obstore.sign_async(self.store, "GET", key, timedelta(seconds=expires_in))
        )

    async def aclose(self) -> None:
        return None  # the library's connection pool closes with the store

    def __repr__(self) -> str:
        return f"<ObjectStorage {self.name}>"


def _stat(meta: ObjectMeta) -> Stat:
    return Stat(size=int(meta["size"]), mtime=meta["last_modified"].timestamp())
