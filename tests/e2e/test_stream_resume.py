"""Resuming a dropped stream over real sockets, against the embedded server and
a scale-out deployment: the client hangs up mid-generation, reconnects to
`GET /api/v1/generate/stream?id=` with `Last-Event-ID`, and gets what it
missed, then the rest live, then exactly one `complete`. And without the
opt-in header, the POST stream's bytes are the contract's, with no `id:` line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Server
from tests.e2e.scaleout import (
    DEPLOYMENTS,
    NO_FAULTS,
    deployment_factory,  # noqa: F401
    deployment_server_factory,
)

OPT_IN = {"X-Stream-Event-Ids": "true"}
OPENING = b'data: {"type":"status","message":"Starting generation...","progress":0}\n\n'
# Slow enough to hang up mid-way: 8 progress steps over 2 s.
SLOW = {"builtin_latency_seconds": 2.0, "builtin_steps": 8, "stream_keepalive_seconds": 0.2}

Numbered = tuple[int | None, dict[str, Any]]


@pytest.fixture(params=DEPLOYMENTS)
def server_factory(request: pytest.FixtureRequest, server_factory: Any) -> Any:
    """Each test runs against the embedded server and a scale-out deployment."""
    return deployment_server_factory(request, server_factory)


def events_of(response: requests.Response) -> Iterator[Numbered]:
    """`(id, event)` as each event arrives; comments are checked and skipped."""
    event_id: int | None = None
    data: dict[str, Any] | None = None
    for raw in response.iter_lines():
        line = raw.decode()
        if not line:
            if data is not None:
                yield event_id, data
            event_id, data = None, None
        elif line.startswith("id: "):
            event_id = int(line[len("id: ") :])
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
        else:
            assert line.startswith(":"), line


def start_stream(server: Server, prompt: str, **headers: str) -> requests.Response:
    response = requests.post(
        server.url("/api/v1/generate"),
        json={"prompt": prompt, "mode": "stream"},
        headers={**server.headers, **headers},
        stream=True,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def reconnect(server: Server, generation_id: str, last_event_id: int | None) -> requests.Response:
    headers = dict(server.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return requests.get(
        server.url("/api/v1/generate/stream"),
        params={"id": generation_id},
        headers=headers,
        stream=True,
        timeout=30,
    )


def drop_mid_way(server: Server, prompt: str) -> tuple[str, list[Numbered]]:
    """Start an opted-in stream and hang up after the first rendering step, while
    the generation still runs. Returns the generation id and what arrived."""
    received: list[Numbered] = []
    with start_stream(server, prompt, **OPT_IN) as response:
        generation_id = response.headers["X-Generation-Id"]
        for item in events_of(response):
            received.append(item)
            if item[1]["message"].startswith("Rendering"):
                break
    assert received[-1][1]["type"] == "status"
    assert server.record(generation_id)["processingStatus"] == "processing"
    return generation_id, received


def assert_one_clean_stream(events: list[Numbered]) -> dict[str, Any]:
    """Ids strictly increasing (so no event twice), progress never down, exactly
    one final event, last, and it is a `complete`. Returns it."""
    ids = [event_id for event_id, _ in events]
    assert all(event_id is not None for event_id in ids), ids
    assert ids == sorted(set(ids)), ids  # type: ignore[type-var]
    progress = [event["progress"] for _, event in events]
    assert progress == sorted(progress), progress
    finals = [event for _, event in events if event["type"] in ("complete", "error")]
    assert len(finals) == 1, finals
    assert finals[0] is events[-1][1]
    assert finals[0]["type"] == "complete"
    return finals[0]


def test_a_dropped_stream_resumes_and_ends_with_exactly_one_complete(
    server_factory: Any,
) -> None:
    server = server_factory(**SLOW).start()
    generation_id, before = drop_mid_way(server, "a lighthouse, interrupted")
    assert before[0] == (0, {"type": "status", "message": "Starting generation...", "progress": 0})

    with reconnect(server, generation_id, before[-1][0]) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        after = list(events_of(response))
    assert after and all(event["type"] == "status" for _, event in after[:-1])
    final = assert_one_clean_stream(before + after)
    data = final["data"]
    assert data["success"] is True and data["generationId"] == generation_id
    assert data["creditsUsed"] == 1 and data["remainingCredits"] == 99
    record = server.record(generation_id)
    assert record["processingStatus"] == "completed"
    assert record["outputImageUrls"] == data["imageUrls"]

    # Nothing was missed: the whole stream, replayed now, is what the two halves made.
    with reconnect(server, generation_id, None) as response:
        everything = list(events_of(response))
    assert before[1:] + after == everything

    # A client that had the final event and reconnects is told there is no more.
    again = reconnect(server, generation_id, after[-1][0])
    assert again.status_code == 204
    assert again.content == b""


def test_without_opt_in_the_post_stream_is_byte_for_byte_the_contract(
    server_factory: Any,
) -> None:
    server = server_factory(builtin_latency_seconds=0.5, stream_keepalive_seconds=0.1).start()
    with start_stream(server, "a quiet harbour") as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        body = response.content
    # `data: {compact json}` blocks and keep-alive comments, nothing else: no `id:`.
    assert re.fullmatch(rb"(?:(?:data: \{[^\n]*\}|: keep-alive)\n\n)+", body), body
    assert not re.search(rb"^id:", body, re.M)
    assert body.startswith(OPENING)
    events = [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]
    for event in events:
        assert b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n" in body
    assert [list(e) for e in events[:-1]] == [["type", "message", "progress"]] * (len(events) - 1)
    assert [e["type"] for e in events].count("complete") == 1
    assert events[-1]["type"] == "complete"


def test_scale_out_a_stream_dropped_on_one_api_process_resumes_on_another(
    deployment_factory: Any,  # noqa: F811
) -> None:
    deployment = deployment_factory(apis=2, workers=1, **SLOW, **NO_FAULTS)
    first, second = deployment.apis
    generation_id, before = drop_mid_way(first, "a relay race")
    with reconnect(second, generation_id, before[-1][0]) as response:
        assert response.status_code == 200
        after = list(events_of(response))
    final = assert_one_clean_stream(before + after)
    assert final["data"]["generationId"] == generation_id
    assert final["data"]["imageUrls"] == second.record(generation_id)["outputImageUrls"]
