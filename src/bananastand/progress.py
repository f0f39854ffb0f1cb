"""Progress events of running generations, fanned out to stream subscribers.

`ProgressBus` is the in-process implementation: each live generation has a
channel that remembers its events, so a subscriber that arrives late (or
reconnects) replays what it missed and then follows live. A channel closes
after its final (`complete` or `error`) event and is forgotten shortly after.

Every event has a sequence number, 1, 2, 3, … in the order it was published
(here: its place in the channel; in Redis: the stream entry id `0-N`).
Subscribers get `(seq, event)` pairs; the stream's `id:` lines and the
`Last-Event-ID` of a reconnecting client are these numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]
Numbered = tuple[int, Event]  # (sequence number, event)
FINAL_TYPES = frozenset({"complete", "error"})
# `data` key of a status event that reports one image finished before the run ends
# (id, extension, expiresAt, index): signed into a URL for the console, left out of
# the API's stream (see `GenerationService.follow`).
FINISHED_IMAGE = "finishedImage"
_RETENTION_SECONDS = 60.0


@dataclass
class _Channel:
    events: list[Event] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    closed: bool = False

    @property
    def progress(self) -> int:
        return int(self.events[-1]["progress"]) if self.events else 0


class ProgressBus:
    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}

    def open(self, generation_id: str) -> None:
        self._channels.setdefault(generation_id, _Channel())

    async def publish(self, generation_id: str, event: Event) -> None:
        """Append an event. Progress never goes down; nothing follows a final event."""
        channel = self._channels.get(generation_id)
        if channel is None or channel.closed:
            return
        event = {**event, "progress": max(int(event.get("progress", 0)), channel.progress)}
        async with channel.changed:
            channel.events.append(event)
            if event["type"] in FINAL_TYPES:
                channel.closed = True
            channel.changed.notify_all()
        if channel.closed:
            asyncio.get_running_loop().call_later(
                _RETENTION_SECONDS, self._channels.pop, generation_id, None
            )

    async def final_seq(self, generation_id: str) -> int | None:
        """The sequence number of the final event, if it was published and is remembered."""
        channel = self._channels.get(generation_id)
        return len(channel.events) if channel is not None and channel.closed else None

    async def subscribe(
        self, generation_id: str, *, idle_timeout: float | None = None
    ) -> AsyncIterator[Numbered | None]:
        """Yield every event, numbered, from the first until the final one. Yields
        `None` whenever `idle_timeout` passes without an event (keep-alive time)."""
        channel = self._channels.get(generation_id)
        if channel is None:
            return
        index = 0
        while True:
            async with channel.changed:
                if index >= len(channel.events) and not channel.closed:
                    with contextlib.suppress(TimeoutError):  # (not `wait_for`: see webhooks)
                        async with asyncio.timeout(idle_timeout):
                            await channel.changed.wait()
                pending = channel.events[index:]
            if not pending:
                if channel.closed:
                    return
                yield None
                continue
            for event in pending:
                index += 1
                yield index, event
            if channel.closed and index >= len(channel.events):
                return
