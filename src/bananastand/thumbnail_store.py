"""Where the console's thumbnails are kept, and when they are made.

A thumbnail (see `thumbnails`) is stored beside its image (`storage.thumb_key`)
the first time something needs it: the History page, before it is rendered,
for the images it lists (so the browser's requests find them made), and
`?size=thumb` on an image's URL for any other. Never when the image is stored:
a thumbnail costs more CPU than everything else a generation request does, and
most images made through the API are never looked at in the console.

Each thumbnail is made once however many ask for it at the same moment, and
runs to the end (and is kept) even when the request that asked went away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from bananastand import thumbnails
from bananastand.errors import NotFound, StorageUnavailable
from bananastand.storage import Storage, thumb_key

log = logging.getLogger(__name__)

# Thumbnails made at once (each keeps a core busy for tens of milliseconds).
CONCURRENCY = 2
# How long the History page waits for its thumbnails; the rest are made all
# the same, and the browser's requests wait for them.
PAGE_WAIT_SECONDS = 2.0


class ThumbnailStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._making: dict[str, asyncio.Future[str | None]] = {}
        self._turns = asyncio.Semaphore(CONCURRENCY)

    async def key_for(self, image_id: str, image_key: str) -> str | None:
        """The key of the image's stored thumbnail, made now if there is none yet;
        None when it cannot be made (show the image itself). `NotFound` when the
        image is gone; `StorageUnavailable` when the store cannot be reached."""
        key = thumb_key(image_id)
        if await self.storage.stat(key) is not None:
            return key
        making = self._making.get(image_id)
        if making is None:
            making = asyncio.ensure_future(self._make(image_key, key))
            self._making[image_id] = making
            making.add_done_callback(lambda done: self._made(image_id, done))
        return await asyncio.shield(making)

    async def prepare(self, images: Iterable[tuple[str, str]]) -> None:
        """Make the missing thumbnails of `(image_id, image_key)` pairs, waiting
        at most `PAGE_WAIT_SECONDS`; failures are left for the image's own request
        to report."""
        tasks = [asyncio.ensure_future(self.key_for(i, key)) for i, key in images]
        for task in tasks:  # failures are answered again when the browser asks
            task.add_done_callback(_quietly)
        if tasks:
            await asyncio.wait(tasks, timeout=PAGE_WAIT_SECONDS)

    def _made(self, image_id: str, making: asyncio.Future[str | None]) -> None:
        self._making.pop(image_id, None)
        _quietly(making)  # its askers may all have gone

    async def _make(self, image_key: str, key: str) -> str | None:
        source = await self.storage.get(image_key)
        if source is None:
            raise NotFound("No such image")
        try:
            async with self._turns:
                made = await thumbnails.make_async(source)
            await self.storage.put(key, made)
        except StorageUnavailable:
            raise
        except Exception:
            log.warning("could not make the thumbnail of %s", image_key, exc_info=True)
            return None
        return key


def _quietly(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
