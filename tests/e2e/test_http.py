"""Behaviour only a real socket shows: SSE framing and keep-alives as they
arrive, clients that leave early, many clients at once, body limits, headers."""

from __future__ import annotations

import io
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import requests
from PIL import Image

from tests.e2e.conftest import Server
from tests.e2e.scaleout import (
    DEPLOYMENTS,
    deployment_factory,  # noqa: F401
    deployment_server_factory,
)

T = TypeVar("T")

DEMO_EMAIL = "demo@bananastand.local"
CONCURRENCY_ERROR = "Too many concurrent API requests for this account"
COMPLETE_KEYS = {"success", "generationId", "imageUrls", "creditsUsed", "remainingCredits"}


# --- helpers ---------------------------------------------------------------------


def wait_until(check: Callable[[], T | None], *, timeout: float = 10.0, every: float = 0.05) -> T:
    """Poll `check` until it returns something truthy (bounded); fail otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        time.sleep(every)


def post(server: Server, body: dict[str, Any], **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    return requests.post(
        server.url("/api/v1/generate"), json=body, headers=server.headers, **kwargs
    )


def credits(server: Server) -> int:
    response = requests.get(server.url("/api/v1/credits"), headers=server.headers, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["data"]["credits"])


def settled(server: Server, generation_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """Poll GET /generate?id= until the record reaches a terminal state."""

    def check() -> dict[str, Any] | None:
        data = server.record(generation_id)
        return data if data["processingStatus"] in ("completed", "failed") else None

    return wait_until(check, timeout=timeout)


def ledger(server: Server) -> list[tuple[int, str, str]]:
    """The demo account's ledger rows that name a generation: (amount, reason, id)."""
    result = server.cli("admin", "ledger", DEMO_EMAIL)
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\S+ \S+\s+([+-]\d+)\s+(\w+)\s+([0-9a-f]{16,})\b", result.stdout, re.M)
    return [(int(amount), reason, gid) for amount, reason, gid in rows]


def assert_concurrency_429(response: requests.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == {
        "error": CONCURRENCY_ERROR,
        "type": "concurrency_limit",
        "limit": limit,
        "active": limit,
    }
    assert int(response.headers["Retry-After"]) >= 0
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Active"] == str(limit)


def assert_png(content: bytes, size: tuple[int, int] = (1024, 1024)) -> None:
    with Image.open(io.BytesIO(content)) as image:
        assert image.format == "PNG"
        assert image.size == size
        image.load()


def sse_lines(response: requests.Response) -> Iterator[tuple[float, str]]:
    """Non-empty lines of an event stream as they arrive, with their arrival time."""
    for raw in response.iter_lines():
        line = raw.decode()
        if line:
            yield time.monotonic(), line


def final_event(response: requests.Response) -> dict[str, Any]:
    events = [json.loads(line[6:]) for _, line in sse_lines(response) if line.startswith("data: ")]
    finals = [e for e in events if e["type"] in ("complete", "error")]
    assert len(finals) == 1 and finals[0] is events[-1], events
    return finals[0]


@pytest.fixture(params=DEPLOYMENTS)
def server_factory(request: pytest.FixtureRequest, server_factory: Any) -> Any:
    """Each test that starts a server runs twice: against the embedded server, and
    against a scale-out deployment (1 API process + 1 worker, PostgreSQL, Redis)."""
    return deployment_server_factory(request, server_factory)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that only read or make quick generations."""
    server = Server(tmp_path_factory.mktemp("shared"), max_body_bytes=1000)
    server.start()
    yield server
    server.stop()


# --- streaming ---------------------------------------------------------------------


def in_chunks(payload: object, size: int = 500) -> Iterator[bytes]:
    """`payload` as JSON sent in pieces, with no Content-Length."""
    body = json.dumps(payload).encode()
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_stream_framing_and_keepalives(server_factory: Any) -> None:
    # One slow step: without keep-alives the line would be silent for 1.5 s.
    server = server_factory(
        builtin_latency_seconds=1.5, builtin_steps=1, stream_keepalive_seconds=0.2
    ).start()
    started = time.monotonic()
    with post(server, {"prompt": "a slow sunrise", "mode": "stream"}, stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = list(sse_lines(response))

    kinds = []
    events = []
    for _, line in lines:
        if line.startswith("data: "):
            event = json.loads(line[len("data: ") :])
            # Compact JSON on one line, as clients in the wild expect.
            assert line[len("data: ") :] == json.dumps(event, separators=(",", ":"))
            events.append(event)
            kinds.append("data")
        else:
            assert line.startswith(":"), line
            kinds.append("comment")

    # Keep-alive comments arrived while the generation ran, i.e. between events.
    first_data = kinds.index("data")
    last_data = len(kinds) - 1 - kinds[::-1].index("data")
    assert kinds[first_data:last_data].count("comment") >= 3, kinds
    times = [started] + [t for t, _ in lines]
    assert max(b - a for a, b in itertools.pairwise(times)) < 0.9

    progress = [e["progress"] for e in events]
    assert progress == sorted(progress), progress
    assert all(0 <= p <= 100 for p in progress)
    assert [e["type"] for e in events[:-1]] == ["status"] * (len(events) - 1)
    final = events[-1]
    assert final["type"] == "complete" and final["progress"] == 100
    assert set(final["data"]) >= COMPLETE_KEYS
    data = final["data"]
    assert data["success"] is True
    assert data["creditsUsed"] == 1 and data["remainingCredits"] == 99 == credits(server)
    assert len(data["imageUrls"]) == 1
    assert server.record(data["generationId"])["processingStatus"] == "completed"


def test_stream_client_that_leaves_does_not_lose_the_generation(server_factory: Any) -> None:
    server = server_factory(builtin_latency_seconds=1.5, stream_keepalive_seconds=0.2).start()
    response = post(server, {"prompt": "left behind", "mode": "stream"}, stream=True)
    assert response.status_code == 200
    first = next(line for _, line in sse_lines(response) if line.startswith("data: "))
    assert json.loads(first[6:])["type"] == "status"
    response.close()  # the client hangs up mid-stream

    # The generation still runs and still holds the account's only slot.
    assert_concurrency_429(post(server, {"prompt": "too soon"}), limit=1)
    charges = [row for row in ledger(server) if row[0] < 0]
    assert len(charges) == 1, charges
    generation_id = charges[0][2]

    data = settled(server, generation_id)
    assert data["processingStatus"] == "completed"
    assert data["creditsUsed"] == 1
    assert len(data["outputImageUrls"]) == 1
    image = requests.get(data["outputImageUrls"][0], timeout=10)
    assert image.status_code == 200
    assert_png(image.content)
    assert credits(server) == 99  # charged once, not refunded

    # The slot was freed: the next request is served.
    again = post(server, {"prompt": "my turn"})
    assert again.status_code == 200, again.text
    assert again.json()["remainingCredits"] == 98 == credits(server)
    assert sorted(row[2] for row in ledger(server) if row[0] < 0) == sorted(
        [generation_id, again.json()["generationId"]]
    )


def test_sync_client_that_times_out_does_not_lose_the_generation(server_factory: Any) -> None:
    server = server_factory(builtin_latency_seconds=1.5).start()
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(server, {"prompt": "impatient"}, timeout=0.3)

    # The abandoned generation keeps its slot while it runs...
    assert_concurrency_429(post(server, {"prompt": "too soon"}), limit=1)

    # ...and frees it when it ends: retry until the account is served.
    def served() -> requests.Response | None:
        response = post(server, {"prompt": "patient"})
        if response.status_code == 429:
            return None
        return response

    second = wait_until(served, timeout=15, every=0.1)
    assert second.status_code == 200, second.text
    assert second.json()["success"] is True
    assert credits(server) == 98  # 1 for the abandoned generation, 1 for this one

    ids = {row[2] for row in ledger(server) if row[0] < 0}
    assert len(ids) == 2 and second.json()["generationId"] in ids
    (abandoned,) = ids - {second.json()["generationId"]}
    data = server.record(abandoned)
    assert data["processingStatus"] == "completed"
    assert data["prompt"] == "impatient"
    assert data["creditsUsed"] == 1
    assert len(data["outputImageUrls"]) == 1
    assert requests.get(data["outputImageUrls"][0], timeout=10).status_code == 200


# --- many clients at once ------------------------------------------------------------


def test_many_simultaneous_clients_keep_credits_exact(server_factory: Any) -> None:
    start_credits = 20
    server = server_factory(builtin_latency_seconds=0.3, demo_credits=start_credits).start()
    result = server.cli("admin", "set-limit", DEMO_EMAIL, "3")
    assert result.returncode == 0, result.stderr
    assert "concurrency limit: 3" in result.stdout

    clients = 24
    modes = ["sync", "stream", "async"]
    barrier = threading.Barrier(clients)
    statuses: list[int] = []
    rejections: list[requests.Response] = []
    lock = threading.Lock()

    def client(index: int) -> tuple[str, int, int]:
        """Retry on 429 until served (200) or out of credits (402)."""
        mode = modes[index % len(modes)]
        body = {"prompt": f"crowd {index}", "quantity": 2, "mode": mode}
        barrier.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            response = post(server, body, stream=mode == "stream")
            with lock:
                statuses.append(response.status_code)
            if response.status_code == 429:
                response.content  # noqa: B018 (read the body before the next try)
                with lock:
                    rejections.append(response)
                time.sleep(0.1)  # client back-off between retries
                continue
            if response.status_code != 200:
                return mode, response.status_code, 0
            if mode == "sync":
                return mode, 200, int(response.json()["creditsUsed"])
            if mode == "stream":
                with response:
                    event = final_event(response)
                assert event["type"] == "complete", event
                return mode, 200, int(event["data"]["creditsUsed"])
            data = settled(server, response.json()["generationId"])
            assert data["processingStatus"] == "completed", data
            return mode, 200, int(data["creditsUsed"])
        raise AssertionError(f"client {index} was neither served nor refused in time")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = list(pool.map(client, range(clients)))

    assert set(statuses) <= {200, 402, 429}, sorted(set(statuses))
    assert 429 in statuses and 402 in statuses
    for response in rejections:
        assert_concurrency_429(response, limit=3)
    served = [used for _, status, used in outcomes if status == 200]
    assert all(used == 2 for used in served)
    final = credits(server)
    assert final >= 0
    assert final == start_credits - sum(served)
    # Everyone retried until served or refused for credits, so all were spent.
    assert final < 2 and len(served) == start_credits // 2


# --- request bodies --------------------------------------------------------------------


def _raw_request(server: Server, head: bytes) -> tuple[bytes, bool]:
    """Send a request head on a fresh socket; (the answer's status line, whether the
    server then closed the connection)."""
    import socket

    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(head)
        except OSError:  # closed on us while still sending: refused, no answer read
            return b"", True
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        status = answer.split(b"\r\n", 1)[0]
        try:
            while sock.recv(65536):  # drain the body; a closed connection ends it
                pass
            closed = True
        except TimeoutError:
            closed = False
    return status, closed


def test_request_heads_over_the_cap_are_431_and_closed(shared_server: Server) -> None:
    # 64 KiB of headers at most (BANANASTAND_MAX_HEADER_BYTES): far more is refused,
    # the connection closed, and the server keeps answering everyone else.
    for size in (70_000, 100_000, 4_000_000):
        head = b"GET /api/v1/models HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * size + b"\r\n\r\n"
        status, closed = _raw_request(shared_server, head)
        assert status in (b"", b"HTTP/1.1 431 Request Header Fields Too Large"), status
        assert closed
    ok = _raw_request(
        shared_server, b"GET /api/v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert ok[0] == b"HTTP/1.1 200 OK"
    assert requests.get(shared_server.url("/api/v1/models"), timeout=10).status_code == 200


def test_body_over_the_limit_is_413_json(shared_server: Server) -> None:
    big = {"prompt": "x" * 5000}
    response = post(shared_server, big)
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["type"] == "payload_too_large"
    assert response.json()["error"]

    # Same without a Content-Length: the server counts what arrives.
    response = requests.post(
        shared_server.url("/api/v1/generate"),
        data=in_chunks(big),
        headers={**shared_server.headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["type"] == "payload_too_large"
    assert requests.get(shared_server.url("/api/v1/models"), timeout=10).status_code == 200


def test_body_over_the_limit_on_openai_endpoints_is_openai_shaped(shared_server: Server) -> None:
    # OpenAI's SDK reads `error.message`; the limit answers in that shape on its paths,
    # whether the size was declared up front or counted as the body arrived.
    import openai

    client = openai.OpenAI(
        base_url=shared_server.url("/v1"),
        api_key=shared_server.headers["Authorization"].removeprefix("Bearer "),
        max_retries=0,
    )
    with pytest.raises(openai.APIStatusError) as raised:
        client.images.generate(model="nano-banana", prompt="x" * 5000)
    assert raised.value.status_code == 413
    error = raised.value.response.json()["error"]
    assert error["code"] == "payload_too_large" and "too large" in error["message"]
    assert error["type"] == "invalid_request_error"

    response = requests.post(
        shared_server.url("/v1/images/generations"),
        data=in_chunks({"model": "nano-banana", "prompt": "x" * 5000}),
        headers={**shared_server.headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "body",
    [b'{"prompt": "a cat",', b"{prompt: 'a cat'}", b'{"prompt": "\xff\xfe"}', b"[1, 2]", b"null"],
    ids=["truncated", "not-json", "bad-utf8", "array", "null"],
)
def test_malformed_body_is_400_json(shared_server: Server, body: bytes) -> None:
    before = credits(shared_server)
    response = requests.post(
        shared_server.url("/api/v1/generate"),
        data=body,
        headers={**shared_server.headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["type"] == "invalid_request"
    assert response.json()["error"]
    assert "Traceback" not in response.text
    assert credits(shared_server) == before


# --- images and schema --------------------------------------------------------------------


def test_image_urls_download_with_cache_headers(shared_server: Server) -> None:
    response = post(shared_server, {"prompt": "two apples", "quantity": 2})
    assert response.status_code == 200, response.text
    urls = response.json()["imageUrls"]
    assert len(urls) == 2 and len(set(urls)) == 2
    for url in urls:
        assert url.startswith(shared_server.base_url + "/images/"), url
        assert url.endswith(".png")
        image = requests.get(url, timeout=10)
        assert image.status_code == 200
        assert image.headers["Content-Type"] == "image/png"
        match = re.search(r"max-age=(\d+)", image.headers["Cache-Control"])
        assert match and int(match.group(1)) > 0, image.headers["Cache-Control"]
        assert_png(image.content)

    # A URL with its signature tampered with is not served.
    forged = re.sub(r"/images/(\d+)/", lambda m: f"/images/{int(m.group(1)) + 1}/", urls[0])
    assert requests.get(forged, timeout=10).status_code in (403, 404)


def test_openapi_lists_the_contract_endpoints(shared_server: Server) -> None:
    response = requests.get(shared_server.url("/openapi.json"), timeout=10)
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/generate"])
    assert "get" in paths["/api/v1/models"]
    assert "get" in paths["/api/v1/credits"]


def test_server_output_never_shows_the_key(shared_server: Server) -> None:
    """After the one announcement, the key appears nowhere in the server's output."""
    assert credits(shared_server) >= 0
    key = str(shared_server.demo_key)
    announced = [i for i, line in enumerate(shared_server.output) if key in line]
    assert announced, "the key was announced once at start"
    assert "".join(shared_server.output[max(announced) + 1 :]).count(key) == 0
