"""Progress events through Redis Streams, so any API process can follow a
generation that runs in any worker (scale-out).

One stream per generation (`{prefix}:progress:{id}`), capped and expiring; a
subscriber reads it from the start with blocking reads, so a late or
reconnecting subscriber replays what it missed.

Entries are added with the id `0-*`: Redis numbers them `0-1`, `0-2`, … in
order, whichever process publishes (a generation retried by another worker
continues the count), so the sequence number of an event is its entry id's
second part and survives trimming. (`<ms>-*` ids need Redis 7.0 or later.)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from bananastand.progress import FINAL_TYPES, Event, Numbered

_RETENTION_SECONDS = 3600
_MAX_EVENTS = 1000


class RedisProgressBus:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, generation_id: str) -> str:
        return f"{self.prefix}:progress:{generation_id}"

    def open(self, generation_id: str) -> None:
        """Streams are created by their first event."""

    async def publish(self, generation_id: str, event: Event) -> None:
        key = self._key(generation_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(
                key, {"e": json.dumps(event, separators=(",", ":"))}, id="0-*", maxlen=_MAX_EVENTS
            )
            pipe.expire(key, _RETENTION_SECONDS)
            await pipe.execute()

    async def final_seq(self, generation_id: str) -> int | None:
        """The sequence number of the final event, if it was published and is kept."""
        entries = await self.redis.xrevrange(self._key(generation_id), count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        if entry_id is None or fields is None:  # an entry deleted under us
            return None
        return _seq(entry_id) if _event(fields).get("type") in FINAL_TYPES else None

    async def subscribe(
        self, generation_id: str, *, idle_timeout: float | None = None
    ) -> AsyncIterator[Numbered | None]:
        """Yield every event, numbered, from the first until the final one; `None`
        after each `idle_timeout` without news (time for a keep-alive, or a check)."""
        key = self._key(generation_id)
        last_id: bytes | str = "0-0"
        block_ms = int((idle_timeout or 30.0) * 1000)
        while True:
            answer = await self.redis.xread({key: last_id}, count=100, block=block_ms)
            if not answer:
                yield None
                continue
            for entry_id, fields in _entries(answer):
                last_id = entry_id
                event = _event(fields)
                yield _seq(entry_id), event
                if event.get("type") in FINAL_TYPES:
                    return


Fields = dict[bytes | str, bytes | str]


def _entries(answer: object) -> list[tuple[bytes | str, Fields]]:
    """The entries of an XREAD reply for one stream: RESP2 answers
    `[[key, [(id, fields), …]]]`, RESP3 `{key: [[(id, fields), …]]}`."""
    if isinstance(answer, dict):
        streams = list(answer.values())
        batch = streams[0][0] if streams and streams[0] else []
    elif isinstance(answer, list) and answer:
        batch = answer[0][1]
    else:
        batch = []
    return [
        (entry_id, fields)
        for entry_id, fields in batch
        if isinstance(entry_id, bytes | str) and isinstance(fields, dict)
    ]


def _seq(entry_id: bytes | str) -> int:
    """`0-7` -> 7."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.rpartition("-")[2])


def _event(fields: Fields) -> Event:
    raw = fields[b"e"] if b"e" in fields else fields["e"]
    return json.loads(raw)  # type: ignore[no-any-return]
