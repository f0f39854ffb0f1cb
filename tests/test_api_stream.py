"""mode=stream: the SSE wire format, progress and the final event."""

from __future__ import annotations

from tests.support import BOTH_DEPLOYMENTS, Api, parse_sse

pytestmark = BOTH_DEPLOYMENTS


async def test_stream_sends_progress_then_exactly_one_complete(api: Api) -> None:
    key = await api.account(credits=10)
    response = await api.generate(key, prompt="a koi pond", mode="stream", quantity=2)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = response.text.split("\n")
    for line in lines:
        assert line == "" or line.startswith("data: {") or line.startswith(":"), line
    events, _ = parse_sse(response.text)
    assert events[0] == {"type": "status", "message": "Starting generation...", "progress": 0}
    assert all(e["type"] == "status" for e in events[:-1])
    assert len(events) >= 5  # several real progress steps
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    assert all(0 <= p <= 100 for p in progress)
    final = events[-1]
    assert final["type"] == "complete"
    assert final["progress"] == 100
    data = final["data"]
    assert data["success"] is True
    assert len(data["imageUrls"]) == 2
    assert data["creditsUsed"] == 2
    assert data["remainingCredits"] == 8
    record = await api.poll(key, data["generationId"])
    assert record["processingStatus"] == "completed"
    assert record["outputImageUrls"] == data["imageUrls"]


async def test_stream_events_are_compact_json_after_one_space(api: Api) -> None:
    key = await api.account()
    response = await api.generate(key, prompt="cat", mode="stream")
    for line in response.text.split("\n"):
        if line.startswith("data:"):
            assert line.startswith("data: {")
            assert ", " not in line.split('"message"')[0]  # compact separators
            assert '": ' not in line


async def test_stream_failure_ends_with_one_error_event_and_refund(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_failure_rate=1.0)
    key = await api.account(credits=3)
    response = await api.generate(key, prompt="cat", mode="stream")
    assert response.status_code == 200
    events, _ = parse_sse(response.text)
    finals = [e for e in events if e["type"] in ("complete", "error")]
    assert len(finals) == 1
    assert events[-1]["type"] == "error"
    data = events[-1]["data"]
    assert data["success"] is False
    assert data["error"]
    assert data["creditsUsed"] == 0
    assert data["remainingCredits"] == 3
    assert await api.balance(key) == 3


async def test_stream_safety_warning_completes_with_success_false(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_safety_words=["blocked"])
    key = await api.account(credits=3)
    events, _ = parse_sse((await api.generate(key, prompt="blocked", mode="stream")).text)
    final = events[-1]
    assert final["type"] == "complete"
    assert final["data"]["success"] is False
    assert final["data"]["warning"] is True
    assert final["message"] == "Content safety check failed"


async def test_stream_errors_before_the_stream_use_status_codes(api: Api) -> None:
    poor = await api.account(credits=0)
    response = await api.generate(poor, prompt="cat", mode="stream")
    assert response.status_code == 402
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["type"] == "insufficient_credits"
    key = await api.account()
    bad = await api.generate(key, prompt="", mode="stream")
    assert bad.status_code == 400
    unauthorized = await api.client.post(
        "/api/v1/generate", json={"prompt": "cat", "mode": "stream"}
    )
    assert unauthorized.status_code == 401


async def test_stream_sends_keepalive_comments_while_waiting(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=0.6, stream_keepalive_seconds=0.05)
    key = await api.account()
    response = await api.generate(key, prompt="cat", mode="stream")
    events, comments = parse_sse(response.text)
    assert events[-1]["type"] == "complete"
    assert comments, "expected keep-alive comment lines"
    assert all(c.startswith(":") for c in comments)


async def test_stream_and_async_answers_name_the_generation_in_a_header(api: Api) -> None:
    key = await api.account()
    stream = await api.generate(key, prompt="cat", mode="stream")
    events, _ = parse_sse(stream.text)
    assert stream.headers["X-Generation-Id"] == events[-1]["data"]["generationId"]
