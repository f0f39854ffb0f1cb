"""Progress events through Redis Streams, so any API process can follow a
generation that runs in any worker (scale-out).

One stream per generation (`{prefix}:progress:{id}`), capped and expiring; a
subscriber reads it from the start (or from event `after`) with blocking reads,
so a late or reconnecting subscriber replays what it missed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from bananastand.progress import FINAL_TYPES, Event

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
            pipe.xadd(key, {"e": json.dumps(event, separators=(",", ":"))}, maxlen=_MAX_EVENTS)
            pipe.expire(key, _RETENTION_SECONDS)
            await pipe.execute()

    async def subscribe(
        self, generation_id: str, *, after: int = 0, idle_timeout: float | None = None
    ) -> AsyncIterator[Event | None]:
        """Yield events from index `after` on, until the final one; `None` after
        each `idle_timeout` without news (time for a keep-alive, or a check)."""
        key = self._key(generation_id)
        last_id = "0-0"
        seen = 0
        block_ms = int((idle_timeout or 30.0) * 1000)
        while True:
            answer = await self.redis.xread({key: last_id}, count=100, block=block_ms)
            if not answer:
                yield None
                continue
            for entry_id, fields in answer[0][1]:
                last_id = entry_id
                seen += 1
                if seen <= after:
                    continue
                event: Event = json.loads(fields[b"e"] if b"e" in fields else fields["e"])
                yield event
                if event.get("type") in FINAL_TYPES:
                    return
