"""Server-sent events: how a generation's progress is framed on the wire.

Shared by the API's streams (`api.generate`) and the console's playground
(`web.playground_pages`). Each event is one `data: {json}` line and a blank
line, preceded by an `id:` line when the caller numbers events (see `progress`);
a comment line (`: keep-alive`) is sent when nothing happened for a while, so
proxies and clients keep the connection open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from bananastand.container import Services

STARTING = {"type": "status", "message": "Starting generation...", "progress": 0}
# Streams are never cached, and never buffered by a proxy in front (nginx).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEP_ALIVE = b": keep-alive\n\n"


def frame(payload: dict[str, Any], event_id: int | None = None) -> bytes:
    """One event: its `id:` line when numbered, then `data:` with compact JSON."""
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return data if event_id is None else b"id: %d\n" % event_id + data


async def event_stream(
    services: Services,
    generation_id: str,
    *,
    ids: bool,
    opening: bool = False,
    after: int | None = None,
    previews: bool = True,
    finished_images: bool = False,
) -> AsyncIterator[bytes]:
    """A generation's events as SSE bytes, from after event `after` (all of them
    when None) until it ends; `opening` first sends "Starting generation..." as
    event 0. `finished_images=True`: the console's stream, which also says when each image
    of a multi-image run is done (see `GenerationService.follow`); never the API's."""
    if opening:
        yield frame(STARTING, 0 if ids else None)
    async for item in services.generation.follow(
        generation_id,
        idle_timeout=services.settings.stream_keepalive_seconds,
        after=after,
        previews=previews,
        finished_images=finished_images,
    ):
        if item is None:
            yield KEEP_ALIVE
        else:
            seq, event = item
            yield frame(event, seq if ids else None)
