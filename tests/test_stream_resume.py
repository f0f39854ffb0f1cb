"""Numbered stream events and resuming a dropped stream (extension): the POST
stream keeps its exact bytes unless the client opts in to `id:` lines, and
`GET /api/v1/generate/stream?id=` with `Last-Event-ID` sends what was missed."""

from __future__ import annotations

import json
import re
from typing import Any

from bananastand.api import schemas
from tests.support import BOTH_DEPLOYMENTS, Api, Key, parse_sse, wait_until

pytestmark = BOTH_DEPLOYMENTS

OPT_IN = {"X-Stream-Event-Ids": "true"}
OPENING = b'data: {"type":"status","message":"Starting generation...","progress":0}\n\n'
FINAL = ("complete", "error")

Numbered = list[tuple[int | None, dict[str, Any]]]


def numbered(text: str) -> Numbered:
    """The events of an SSE body with their `id:` (None when absent); comment
    blocks are checked and skipped; any other line fails the test."""
    events: Numbered = []
    assert text.endswith("\n\n") or not text, text[-200:]
    for block in text.split("\n\n")[:-1]:
        event_id: int | None = None
        data: dict[str, Any] | None = None
        for line in block.split("\n"):
            if line.startswith("id: "):
                assert event_id is None and data is None, block  # id first, once
                event_id = int(line[len("id: ") :])
            elif line.startswith("data: "):
                assert data is None, block
                data = json.loads(line[len("data: ") :])
            else:
                assert line.startswith(":"), line
        if data is None:
            assert event_id is None, block  # a comment block carries no id
        else:
            events.append((event_id, data))
    return events


def ids(events: Numbered) -> list[int | None]:
    return [event_id for event_id, _ in events]


def finals(events: Numbered) -> list[dict[str, Any]]:
    return [event for _, event in events if event["type"] in FINAL]


async def stream(api: Api, key: Key, headers: dict[str, str] | None = None, **body: Any) -> str:
    response = await api.client.post(
        "/api/v1/generate",
        json={"prompt": "a lighthouse at dusk", "mode": "stream", **body},
        headers={**key.headers, **(headers or {})},
    )
    assert response.status_code == 200, response.text
    return response.text


async def resume(
    api: Api, key: Key, generation_id: str, last_event_id: str | int | None = None, **params: Any
) -> Any:
    headers = dict(key.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return await api.client.get(
        "/api/v1/generate/stream", params={"id": generation_id, **params}, headers=headers
    )


async def published(api: Api, generation_id: str) -> int:
    """How many progress events the generation's channel holds now."""
    count = 0
    async for item in api.services.generation.bus.subscribe(generation_id, idle_timeout=0.05):
        if item is None:
            break
        count += 1
    return count


# --- the POST stream ----------------------------------------------------------------------
async def test_without_opt_in_the_post_stream_keeps_its_exact_bytes(api: Api) -> None:
    key = await api.account()
    text = await stream(api, key)
    # Nothing but `data: {compact json}` blocks (and keep-alive comments): no `id:`.
    assert re.fullmatch(r"(?:(?:data: \{[^\n]*\}|: keep-alive)\n\n)+", text), text
    assert "id:" not in text.replace('"generationId"', "")
    assert text.encode().startswith(OPENING)
    events, _ = parse_sse(text)
    for event in events:
        payload = json.dumps(event, separators=(",", ":"))
        assert f"data: {payload}\n\n" in text  # compact, key order as sent
    statuses = [e for e in events if e["type"] == "status"]
    assert len(statuses) >= 3
    assert all(list(e) == ["type", "message", "progress"] for e in statuses)  # no `data`
    assert [e["type"] for e in events].count("complete") == 1


async def test_opting_in_numbers_every_event_and_changes_nothing_else(api: Api) -> None:
    key = await api.account()
    plain, _ = parse_sse(await stream(api, key, seed=5))
    events = numbered(await stream(api, key, OPT_IN, seed=5))
    assert all(event_id is not None for event_id in ids(events))
    numbers = [event_id for event_id in ids(events) if event_id is not None]
    assert numbers[0] == 0  # the opening event
    assert numbers == sorted(set(numbers))  # strictly increasing
    assert len(finals(events)) == 1 and events[-1][1]["type"] == "complete"
    # The same events as without ids (the final one names its own generation).
    assert [e for _, e in events][:-1] == plain[:-1]
    assert events[-1][1]["message"] == plain[-1]["message"]
    for _, event in events:
        schemas.StreamEvent.model_validate(event, strict=True)


# --- resuming -------------------------------------------------------------------------------
async def test_resume_sends_exactly_what_was_missed_and_one_complete(api: Api) -> None:
    key = await api.account()
    full = numbered(await stream(api, key, OPT_IN, quantity=2))
    generation_id = full[-1][1]["data"]["generationId"]
    last_status = full[-2][0]
    assert last_status is not None and last_status >= 4
    for cut in sorted({0, 1, 2, last_status // 2, last_status}):
        response = await resume(api, key, generation_id, cut)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["X-Generation-Id"] == generation_id
        resumed = numbered(response.text)
        assert resumed == [(i, e) for i, e in full if i is not None and i > cut], cut
        assert len(finals(resumed)) == 1 and resumed[-1][1]["type"] == "complete"
    # No Last-Event-ID: the whole stream, from the generation's first event.
    everything = numbered((await resume(api, key, generation_id)).text)
    assert everything == full[1:]


async def test_a_client_that_had_the_final_event_gets_204(api: Api) -> None:
    key = await api.account()
    full = numbered(await stream(api, key, OPT_IN))
    final_id = full[-1][0]
    assert final_id is not None
    generation_id = full[-1][1]["data"]["generationId"]
    for last in (final_id, final_id + 5):
        response = await resume(api, key, generation_id, last)
        assert response.status_code == 204
        assert response.content == b""
    one_before = numbered((await resume(api, key, generation_id, final_id - 1)).text)
    assert one_before == [full[-1]]


async def test_resume_follows_a_running_generation_to_its_one_complete(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=2.0, builtin_steps=4)
    key = await api.account()
    accepted = (await api.generate(key, prompt="a slow moon", mode="async")).json()
    generation_id = accepted["generationId"]

    async def two_events() -> bool:
        return await published(api, generation_id) >= 2

    await wait_until(two_events)
    assert (await api.poll(key, generation_id))["processingStatus"] == "processing"
    response = await resume(api, key, generation_id, 1)
    assert response.status_code == 200
    events = numbered(response.text)
    numbers = ids(events)
    assert all(n is not None and n > 1 for n in numbers)
    assert numbers == sorted(set(numbers))
    assert [e["type"] for _, e in events].count("status") >= 2  # followed live
    [final] = finals(events)
    assert events[-1][1] is final and final["type"] == "complete"
    record = await api.poll(key, generation_id)
    assert record["processingStatus"] == "completed"
    assert final["data"]["imageUrls"] == record["outputImageUrls"]
    progress = [e["progress"] for _, e in events]
    assert progress == sorted(progress)


async def test_resume_after_progress_was_lost_still_ends_with_one_complete(api: Api) -> None:
    key = await api.account()
    full = numbered(await stream(api, key, OPT_IN))
    generation_id = full[-1][1]["data"]["generationId"]
    bus = api.services.generation.bus
    if api.services.redis is not None:  # Redis restarted, or the stream expired
        await api.services.redis.delete(bus._key(generation_id))  # type: ignore[union-attr]
    else:  # the channel's retention passed
        bus._channels.pop(generation_id)  # type: ignore[union-attr]
    resumed = numbered((await resume(api, key, generation_id, 2)).text)
    # Only the final event, built from the record, numbered right after the client's.
    assert resumed == [(3, {**full[-1][1]})]


async def test_a_final_event_built_after_the_channel_failed_is_never_replayed(
    api: Api, monkeypatch: Any
) -> None:
    """The channel fails (e.g. a Redis timeout) while it still holds the events: the
    final event the database gives is numbered past them, so a client resuming
    from it gets 204, not the channel's events and a second `complete`."""
    key = await api.account()
    full = numbered(await stream(api, key, OPT_IN))
    generation_id = full[-1][1]["data"]["generationId"]
    bus = api.services.generation.bus

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError("the channel is unreachable")
        yield  # an async generator

    with monkeypatch.context() as patch:
        patch.setattr(bus, "subscribe", failing)
        fallback = numbered((await resume(api, key, generation_id, 0)).text)
    assert len(fallback) == 1 and fallback[0][1] == full[-1][1]
    final_id = fallback[0][0]
    assert final_id is not None and final_id > max(i for i in ids(full) if i is not None)
    again = await resume(api, key, generation_id, final_id)
    assert again.status_code == 204


async def test_resume_is_for_the_callers_own_generations(api: Api) -> None:
    key = await api.account()
    other = await api.account()
    generation_id = numbered(await stream(api, key))[-1][1]["data"]["generationId"]
    assert (await resume(api, other, generation_id)).status_code == 404
    assert (await resume(api, key, "no-such-generation")).status_code == 404
    anonymous = await api.client.get("/api/v1/generate/stream", params={"id": generation_id})
    assert anonymous.status_code == 401
    for bad in ("abc", "-1", "1.5", "9" * 30):
        response = await resume(api, key, generation_id, bad)
        assert response.status_code == 400, bad
        assert response.json()["type"] == "invalid_request"
    blank = await resume(api, key, generation_id, " ")  # none: the whole stream
    assert finals(numbered(blank.text))[0]["type"] == "complete"


async def test_openapi_documents_the_resume_endpoint_and_the_previews_field(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    resume_op = spec["paths"]["/api/v1/generate/stream"]["get"]
    assert {"200", "204", "400", "401", "404"} <= set(resume_op["responses"])
    assert "Last-Event-ID" in {p["name"] for p in resume_op["parameters"]}
    body = spec["paths"]["/api/v1/generate"]["post"]["requestBody"]["content"]
    assert "previews" in body["application/json"]["schema"]["properties"]
    data = spec["components"]["schemas"]["StreamEventData"]["properties"]
    assert "previewImage" in data
