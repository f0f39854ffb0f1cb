"""`bananastand.client` against `httpx.MockTransport`: parsing, retries, error
mapping, SSE framing and download naming. No sockets, no sleeping."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bananastand import errors as server_errors
from bananastand.api.errors import _HTTP_TYPES
from bananastand.client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    BananastandAPIError,
    Client,
    ConflictError,
    Generation,
    GenerationFailedError,
    GenerationRecord,
    GoneError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerBusyError,
    StreamInterruptedError,
    TooManyAttemptsError,
    WaitTimeoutError,
    image_filename,
    parse_retry_after,
    parse_sse_line,
)
from bananastand.client._errors import _BY_TYPE, _error_from_response

BASE = "http://nb.test"
KEY = "nb_supersecretkey123"
CONCURRENCY = {
    "error": "Too many concurrent API requests for this account",
    "type": "concurrency_limit",
    "limit": 1,
    "active": 1,
}
RECORD = {
    "id": "gen1",
    "prompt": "a cat",
    "outputImageUrls": ["http://nb.test/images/a/gen1-0.png"],
    "modelUsed": "nano-banana",
    "processingStatus": "completed",
    "creditsUsed": 1,
    "createdAt": "2025-01-01T00:00:00.000Z",
}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return answer(request) if callable(answer) else answer


def make(handler: Handler, **kwargs: Any) -> tuple[Client, list[float]]:
    slept: list[float] = []
    client = Client(BASE, KEY, transport=httpx.MockTransport(handler), sleep=slept.append, **kwargs)
    return client, slept


# --- results -------------------------------------------------------------------------


def test_sync_generate_sends_the_contract_body_and_parses_the_result() -> None:
    rec = Recorder(
        httpx.Response(
            200,
            json={
                "success": True,
                "generationId": "g1",
                "imageUrls": ["http://nb.test/images/x/g1.png"],
                "creditsUsed": 2,
                "remainingCredits": 98,
            },
        )
    )
    client, _ = make(rec)
    result = client.generate(
        "a cat",
        model="nano-banana",
        aspect_ratio="16:9",
        quantity=2,
        reference_image_urls=["https://example.com/a.jpg"],
        seed=7,
    )
    assert result == Generation(
        generation_id="g1",
        success=True,
        image_urls=("http://nb.test/images/x/g1.png",),
        credits_used=2,
        remaining_credits=98,
    )
    request = rec.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/api/v1/generate"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "prompt": "a cat",
        "mode": "sync",
        "selectedModel": "nano-banana",
        "aspectRatio": "16:9",
        "quantity": 2,
        "referenceImageUrls": ["https://example.com/a.jpg"],
        "seed": 7,
    }
    with pytest.raises(AttributeError):
        result.success = False  # type: ignore[misc]


def test_base_url_with_api_prefix_is_accepted() -> None:
    rec = Recorder(httpx.Response(200, json={"data": {"credits": 5}}))
    client = Client(BASE + "/api/v1/", KEY, transport=httpx.MockTransport(rec))
    assert client.credits() == 5
    assert rec.requests[0].url.path == "/api/v1/credits"


def test_async_mode_warning_models_credits_and_get() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/models":
            assert "Authorization" in request.headers
            return httpx.Response(
                200,
                json={
                    "data": [
                        {
                            "name": "nano-banana",
                            "displayName": "Nano Banana",
                            "creditsCost": 1,
                            "supportsImageInput": True,
                            "supportsAspectRatio": True,
                            "requiresPro": False,
                            "backend": "builtin",
                        }
                    ]
                },
            )
        if path == "/api/v1/credits":
            return httpx.Response(200, json={"data": {"credits": 42}})
        if request.method == "GET":
            assert request.url.params["id"] == "gen1"
            return httpx.Response(200, json={"data": {**RECORD, "extra": 1}})
        body = json.loads(request.content)
        if body["prompt"] == "unsafe":
            return httpx.Response(
                200,
                json={
                    "success": False,
                    "warning": True,
                    "generationId": "g2",
                    "message": "Content safety check failed",
                    "creditsUsed": 1,
                    "remainingCredits": 41,
                },
            )
        assert body["mode"] == "async"
        return httpx.Response(
            200,
            json={
                "success": True,
                "async": True,
                "generationId": "g3",
                "message": "Generation started.",
                "creditsUsed": 1,
                "remainingCredits": 40,
            },
        )

    client, _ = make(handler)
    [model] = client.models()
    assert (model.name, model.display_name, model.credits_cost, model.requires_pro) == (
        "nano-banana",
        "Nano Banana",
        1,
        False,
    )
    assert client.credits() == 42
    warned = client.generate("unsafe")
    assert warned.warning and not warned.success and warned.image_urls == ()
    assert warned.message == "Content safety check failed"
    accepted = client.generate("a castle", mode="async")
    assert accepted.is_async and accepted.generation_id == "g3"
    record = client.get("gen1")
    assert record.processing_status == "completed" and record.is_terminal
    assert record.output_image_urls == ("http://nb.test/images/a/gen1-0.png",)
    assert record.model_used == "nano-banana" and record.created_at.endswith("Z")
    with pytest.raises(ValueError):
        client.generate("x", mode="stream")  # type: ignore[arg-type]


# --- retries -------------------------------------------------------------------------


def test_429_is_retried_after_retry_after_then_succeeds() -> None:
    busy = httpx.Response(429, json=CONCURRENCY, headers={"Retry-After": "3"})
    rec = Recorder(busy, busy, httpx.Response(200, json={"data": {"credits": 9}}))
    client, slept = make(rec)
    assert client.credits() == 9
    assert len(rec.requests) == 3
    assert slept == [3.0, 3.0]


def test_retries_stop_after_max_retries_and_raise() -> None:
    rec = Recorder(httpx.Response(429, json=CONCURRENCY, headers={"Retry-After": "2"}))
    client, slept = make(rec, max_retries=3)
    with pytest.raises(RateLimitError) as info:
        client.generate("a cat")
    assert len(rec.requests) == 4  # the first try and three retries
    assert slept == [2.0, 2.0, 2.0]
    error = info.value
    assert (error.status, error.type, error.limit, error.active) == (
        429,
        "concurrency_limit",
        1,
        1,
    )
    assert error.retry_after == 2.0
    assert str(error) == "Too many concurrent API requests for this account"


def test_503_without_retry_after_backs_off_exponentially() -> None:
    busy = httpx.Response(503, json={"error": "Server busy", "type": "server_busy"})
    rec = Recorder(busy)
    client, slept = make(rec, max_retries=2)
    with pytest.raises(ServerBusyError):
        client.generate("a cat", mode="async")
    assert len(rec.requests) == 3
    assert slept == [1.0, 2.0]


def test_max_retries_zero_does_not_retry() -> None:
    rec = Recorder(httpx.Response(503, json={"error": "busy", "type": "server_busy"}))
    client, slept = make(rec, max_retries=0)
    with pytest.raises(ServerBusyError):
        client.credits()
    assert len(rec.requests) == 1 and slept == []


def test_other_errors_are_not_retried() -> None:
    rec = Recorder(httpx.Response(500, json={"error": "boom", "type": "internal_error"}))
    client, slept = make(rec)
    with pytest.raises(InternalServerError):
        client.credits()
    assert len(rec.requests) == 1 and slept == []


def test_parse_retry_after() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


# --- error mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, {"error": "prompt is required", "type": "invalid_request"}, InvalidRequestError),
        (400, {"error": "no such model", "type": "model_unavailable"}, InvalidRequestError),
        (401, {"error": "Invalid API key", "type": "unauthorized"}, AuthenticationError),
        (
            402,
            {"error": "Insufficient credits", "type": "insufficient_credits"},
            InsufficientCreditsError,
        ),
        (
            403,
            {"error": "API access disabled", "type": "api_access_disabled"},
            PermissionDeniedError,
        ),
        (404, {"error": "Generation not found", "type": "not_found"}, NotFoundError),
        (500, {"error": "Internal server error", "type": "internal_error"}, InternalServerError),
        # by status when the type is unknown or missing
        (401, {"error": "nope"}, AuthenticationError),
        (404, {"error": "gone", "type": "something_new"}, NotFoundError),
        (409, {"error": "conflict", "type": "conflict"}, ConflictError),
        (418, {"error": "teapot", "type": "teapot"}, BananastandAPIError),
        (504, {}, InternalServerError),
    ],
)
def test_errors_map_by_type_then_status(
    status: int, body: dict[str, Any], cls: type[BananastandAPIError]
) -> None:
    client, _ = make(Recorder(httpx.Response(status, json=body)))
    with pytest.raises(BananastandAPIError) as info:
        client.credits()
    assert type(info.value) is cls
    assert info.value.status == status
    assert info.value.body == body
    assert str(info.value) == body.get("error", f"HTTP {status}")


def test_generation_failed_carries_the_generation_id() -> None:
    body = {
        "success": False,
        "error": "upstream failed",
        "type": "generation_failed",
        "generationId": "g9",
        "creditsUsed": 0,
        "remainingCredits": 10,
    }
    client, _ = make(Recorder(httpx.Response(502, json=body)))
    with pytest.raises(GenerationFailedError) as info:
        client.generate("a cat")
    assert info.value.generation_id == "g9"


def test_non_json_error_body() -> None:
    client, _ = make(Recorder(httpx.Response(502, text="<html>Bad Gateway</html>")))
    with pytest.raises(GenerationFailedError) as info:
        client.credits()
    assert str(info.value) == "HTTP 502" and info.value.body == {}


def test_the_key_never_shows_in_reprs_or_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = make(Recorder(httpx.Response(401, json={"error": "Invalid API key"})))
    with pytest.raises(AuthenticationError) as info:
        client.credits()
    assert KEY not in repr(client) and KEY not in str(client.__dict__.get("base_url"))
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    broken, _ = make(refuse)
    with pytest.raises(APIConnectionError) as conn:
        broken.credits()
    assert KEY not in str(conn.value) and KEY not in repr(conn.value)


# --- SSE -------------------------------------------------------------------------------

STREAM = (
    b": keep-alive\n\n"
    b'data: {"type":"status","message":"Starting generation...","progress":0}\n\n'
    b": keep-alive\n\n"
    b'data: {"type":"status","message":"Processing...","progress":50}\r\n\r\n'
    b"event: ignored\n"
    b'data:{"type":"status","message":"no space: not an event","progress":60}\n\n'
    b'data: {"type":"complete","message":"Generation complete","progress":100,'
    b'"data":{"success":true,"generationId":"s1","imageUrls":["http://nb.test/i/s1.webp"],'
    b'"creditsUsed":1,"remainingCredits":9}}\n\n'
)


def test_stream_parses_data_lines_and_ignores_comments() -> None:
    rec = Recorder(
        httpx.Response(200, content=STREAM, headers={"Content-Type": "text/event-stream"})
    )
    client, _ = make(rec)
    events = list(client.stream("a lighthouse", quantity=1))
    assert [(e.type, e.progress) for e in events] == [
        ("status", 0),
        ("status", 50),
        ("complete", 100),
    ]
    assert json.loads(rec.requests[0].content)["mode"] == "stream"
    final = events[-1]
    assert final.is_final and final.data is not None
    assert final.data.generation_id == "s1"
    assert final.data.image_urls == ("http://nb.test/i/s1.webp",)
    assert final.data.remaining_credits == 9


def test_stream_errors_before_start_are_raised_and_429_retried() -> None:
    busy = httpx.Response(429, json=CONCURRENCY, headers={"Retry-After": "1"})
    rec = Recorder(busy, httpx.Response(402, json={"error": "Insufficient credits"}))
    client, slept = make(rec)
    with pytest.raises(InsufficientCreditsError):
        list(client.stream("a cat"))
    assert len(rec.requests) == 2 and slept == [1.0]


def test_stream_cut_before_a_final_event() -> None:
    cut = b'data: {"type":"status","message":"Processing...","progress":50}\n\n'
    client, _ = make(Recorder(httpx.Response(200, content=cut)))
    with pytest.raises(APIConnectionError):
        list(client.stream("a cat"))


def test_parse_sse_line() -> None:
    assert parse_sse_line(": ping") is None
    assert parse_sse_line("") is None
    event = parse_sse_line(
        'data: {"type":"error","message":"bad","progress":10,'
        '"data":{"success":false,"error":"bad"}}'
    )
    assert event is not None and event.type == "error" and event.data is not None
    assert event.data.error == "bad" and not event.data.success


# --- wait ------------------------------------------------------------------------------


def test_wait_polls_with_backoff_until_terminal() -> None:
    processing = httpx.Response(200, json={"data": {**RECORD, "processingStatus": "processing"}})
    done = httpx.Response(
        200,
        json={"data": {**RECORD, "processingStatus": "failed", "errorMessage": "upstream timeout"}},
    )
    rec = Recorder(processing, processing, processing, done)
    client, slept = make(rec, poll_interval=1.0, max_poll_interval=3.0)
    record = client.wait("gen1", timeout=100)
    assert record.processing_status == "failed" and record.error_message == "upstream timeout"
    assert len(rec.requests) == 4
    assert len(slept) == 3
    # 1, 2, 3 (capped), each with ±10% jitter
    for got, want in zip(slept, [1.0, 2.0, 3.0], strict=True):
        assert want * 0.9 <= got <= want * 1.1


def test_wait_times_out() -> None:
    processing = httpx.Response(200, json={"data": {**RECORD, "processingStatus": "processing"}})
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    client = Client(BASE, KEY, transport=httpx.MockTransport(Recorder(processing)), sleep=sleep)
    with pytest.raises(WaitTimeoutError) as info:
        client.wait("gen1", timeout=5, clock=lambda: now[0])
    assert isinstance(info.value, TimeoutError)
    assert sum(slept) == pytest.approx(5.0)


# --- download --------------------------------------------------------------------------


def image_server(request: httpx.Request) -> httpx.Response:
    if "images" in request.url.path:
        assert "Authorization" not in request.headers  # signed URLs need no key
        return httpx.Response(200, content=b"bytes of " + request.url.path.encode())
    return httpx.Response(404, json={"error": "not found", "type": "not_found"})


def test_download_names_files_from_the_generation_id_and_url_extension(tmp_path: Path) -> None:
    client, _ = make(image_server)
    result = Generation(
        generation_id="g1",
        success=True,
        image_urls=(
            "http://nb.test/images/tok/a.png",
            "http://nb.test/images/tok/b.JPG?sig=1",
            "http://nb.test/images/tok/c.webp",
        ),
    )
    paths = client.download(result, tmp_path / "out")
    assert [p.name for p in paths] == ["g1_0.png", "g1_1.jpg", "g1_2.webp"]
    assert paths[1].read_bytes() == b"bytes of /images/tok/b.JPG"
    record = GenerationRecord.from_json(RECORD)
    [path] = client.download(record, tmp_path)
    assert path == tmp_path / "gen1_0.png" and path.exists()
    [path] = client.download(["http://nb.test/images/t/x.png"], tmp_path, generation_id="zz")
    assert path.name == "zz_0.png"


def test_download_of_an_expired_image_raises(tmp_path: Path) -> None:
    client, _ = make(image_server)
    with pytest.raises(NotFoundError):
        client.download(["http://nb.test/gone.png"], tmp_path, generation_id="g")


def test_image_filename() -> None:
    assert image_filename("g", 0, "https://x/y/z.jpeg") == "g_0.jpeg"
    assert image_filename("g", 3, "https://x/y/z") == "g_3.png"


# --- the async client ------------------------------------------------------------------


async def test_async_client_retries_streams_and_waits(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.url.path == "/api/v1/credits":
            if sum(r.url.path == "/api/v1/credits" for r in calls) == 1:
                return httpx.Response(429, json=CONCURRENCY, headers={"Retry-After": "4"})
            return httpx.Response(200, json={"data": {"credits": 3}})
        if request.url.path == "/api/v1/generate" and request.method == "POST":
            return httpx.Response(200, content=STREAM)
        if request.url.path == "/api/v1/generate":
            return httpx.Response(200, json={"data": RECORD})
        return image_server(request)

    async with AsyncClient(
        BASE, KEY, transport=httpx.MockTransport(handler), sleep=sleep
    ) as client:
        assert await client.credits() == 3
        assert slept == [4.0]
        events = [event async for event in client.stream("a cat")]
        assert [e.type for e in events] == ["status", "status", "complete"]
        record = await client.wait("gen1")
        assert record.is_terminal
        paths = await client.download(record, tmp_path)
        assert [p.name for p in paths] == ["gen1_0.png"]
        assert KEY not in repr(client)


# --- cancel, history, resume, idempotency, every error type ---------------------------


def test_cancel_sends_delete_and_reads_the_answer() -> None:
    answer = {"success": True, "message": "Generation cancelled", "data": RECORD}
    rec = Recorder(httpx.Response(200, json=answer))
    client, _ = make(rec)
    result = client.cancel("gen1")
    assert rec.requests[0].method == "DELETE"
    assert rec.requests[0].url.path == "/api/v1/generate"
    assert rec.requests[0].url.params["id"] == "gen1"
    assert result.cancelled and result.message == "Generation cancelled"
    assert result.record.id == "gen1"


def test_list_generations_pages_with_next_before() -> None:
    first = {"data": [RECORD, {**RECORD, "id": "gen0"}], "nextBefore": "gen0"}
    last = {"data": [{**RECORD, "id": "genA"}], "nextBefore": None}
    rec = Recorder(httpx.Response(200, json=first), httpx.Response(200, json=last))
    client, _ = make(rec)
    assert [r.id for r in client.iter_generations(page_size=2)] == ["gen1", "gen0", "genA"]
    assert dict(rec.requests[0].url.params) == {"limit": "2"}
    assert dict(rec.requests[1].url.params) == {"limit": "2", "before": "gen0"}
    page = make(Recorder(httpx.Response(200, json=last)))[0].list_generations(limit=5)
    assert [r.id for r in page.records] == ["genA"] and page.next_before is None


NUMBERED = (
    b"id: 0\n"
    b'data: {"type":"status","message":"Starting generation...","progress":0}\n\n'
    b": keep-alive\n\n"
    b"id: 1\n"
    b'data: {"type":"status","message":"Processing...","progress":50}\n\n'
)


def test_stream_asks_for_event_ids_and_a_cut_says_where_to_resume() -> None:
    rec = Recorder(httpx.Response(200, content=NUMBERED, headers={"X-Generation-Id": "g7"}))
    client, _ = make(rec)
    events: list[int | None] = []
    with pytest.raises(StreamInterruptedError) as info:
        for event in client.stream("a cat", previews=False):
            events.append(event.id)
    assert events == [0, 1]
    assert info.value.generation_id == "g7" and info.value.last_event_id == 1
    sent = rec.requests[0]
    assert sent.headers["X-Stream-Event-Ids"] == "true"
    assert json.loads(sent.content)["previews"] is False


def test_resume_sends_last_event_id_and_ends_on_204() -> None:
    rest = b'id: 2\ndata: {"type":"complete","message":"done","progress":100}\n\n'
    rec = Recorder(httpx.Response(200, content=rest), httpx.Response(204))
    client, _ = make(rec)
    [final] = list(client.resume("g7", last_event_id=1, previews=False))
    assert final.is_final and final.id == 2
    sent = rec.requests[0]
    assert sent.method == "GET" and sent.url.path == "/api/v1/generate/stream"
    assert sent.headers["Last-Event-ID"] == "1"
    assert dict(sent.url.params) == {"id": "g7", "previews": "false"}
    assert list(client.resume("g7", last_event_id=2)) == []  # had the final event already
    assert "Last-Event-ID" in rec.requests[1].headers


def test_a_retried_post_keeps_one_idempotency_key() -> None:
    busy = httpx.Response(429, json=CONCURRENCY, headers={"Retry-After": "0"})
    done = httpx.Response(200, json={"success": True, "generationId": "g1", "imageUrls": []})
    rec = Recorder(busy, busy, done)
    client, _ = make(rec)
    client.generate("a cat")
    keys = {r.headers["Idempotency-Key"] for r in rec.requests}
    assert len(rec.requests) == 3 and len(keys) == 1
    client.generate("a cat")  # the next call is a new request: a new key
    assert rec.requests[3].headers["Idempotency-Key"] not in keys
    client.generate("a cat", idempotency_key="order-42")
    assert rec.requests[4].headers["Idempotency-Key"] == "order-42"


def test_no_key_without_retries() -> None:
    done = httpx.Response(200, json={"success": True, "generationId": "g1", "imageUrls": []})
    rec = Recorder(done)
    client, _ = make(rec, max_retries=0)
    client.generate("a cat")
    assert "Idempotency-Key" not in rec.requests[0].headers


def _server_types() -> set[str]:
    types = set(_HTTP_TYPES.values()) | {"headers_too_large"}
    stack: list[type[server_errors.BananastandError]] = [server_errors.BananastandError]
    while stack:
        cls = stack.pop()
        types.add(cls.type)
        stack.extend(cls.__subclasses__())
    return types


def test_every_error_type_the_server_answers_has_its_exception() -> None:
    missing = _server_types() - set(_BY_TYPE)
    assert not missing, f"no client exception for {sorted(missing)}"


@pytest.mark.parametrize(
    ("status", "kind", "cls"),
    [
        (409, "conflict", ConflictError),
        (409, "idempotency_conflict", IdempotencyConflictError),
        (410, "expired", GoneError),
        (413, "payload_too_large", PayloadTooLargeError),
        (429, "concurrency_limit", RateLimitError),
        (429, "too_many_attempts", TooManyAttemptsError),
    ],
)
def test_409_410_413_429_variants(status: int, kind: str, cls: type[BananastandAPIError]) -> None:
    body = json.dumps({"error": "no", "type": kind}).encode()
    error = _error_from_response(status, body, httpx.Headers({"Retry-After": "7"}))
    assert type(error) is cls
    assert (error.status, error.type, error.message, error.retry_after) == (status, kind, "no", 7)


async def test_async_client_cancel_history_resume_and_keys() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(200, json={"success": False, "message": "m", "data": RECORD})
        if request.url.path.endswith("/generations"):
            return httpx.Response(200, json={"data": [RECORD], "nextBefore": None})
        if request.url.path.endswith("/generate/stream"):
            return httpx.Response(200, content=NUMBERED + b'id: 2\ndata: {"type":"error"}\n\n')
        return httpx.Response(200, json={"success": True, "generationId": "g", "async": True})

    async with AsyncClient(BASE, KEY, transport=httpx.MockTransport(handler)) as client:
        assert not (await client.cancel("gen1")).cancelled
        assert [r.id async for r in client.iter_generations()] == ["gen1"]
        assert [e.id async for e in client.resume("g", last_event_id=None)] == [0, 1, 2]
        await client.generate("a cat", mode="async", idempotency_key="k1")
    assert seen[-1].headers["Idempotency-Key"] == "k1"
    assert "Last-Event-ID" not in seen[2].headers
