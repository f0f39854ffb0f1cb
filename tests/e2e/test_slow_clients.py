"""Slow and greedy clients against a real `bananastand serve`: a request head or
body that dribbles in is cut off at its timeout, too many requests at once get a
503 instead of a wait, and everyone else is served meanwhile."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests

from tests.e2e.conftest import Server


def _connect(server: Server) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=15)


def _answer(sock: socket.socket) -> tuple[bytes, bytes, bool]:
    """Read until the server closes: (status line, whole answer, closed by it)."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
        closed = True
    except TimeoutError:
        closed = False
    except ConnectionResetError:
        closed = True
    return answer.split(b"\r\n", 1)[0], answer, closed


@contextlib.contextmanager
def dripping(sock: socket.socket, every: float = 0.2) -> Iterator[None]:
    """Send one byte of body every `every` seconds until the server hangs up."""
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(every):
            try:
                sock.sendall(b" ")
            except OSError:
                return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _models_ok(server: Server) -> bool:
    return requests.get(server.url("/api/v1/models"), timeout=5).status_code == 200


def _credits(server: Server) -> int:
    response = requests.get(server.url("/api/v1/credits"), headers=server.headers, timeout=5)
    return int(response.json()["data"]["credits"])


def test_a_body_sent_a_byte_at_a_time_is_408_and_closed(server_factory: Any) -> None:
    server = server_factory(body_timeout_seconds=1.5).start()
    before = _credits(server)
    head = (
        "POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {server.demo_key}\r\nContent-Length: 500\r\n\r\n"
    ).encode()
    slow = [_connect(server) for _ in range(10)]
    started = time.monotonic()
    for sock in slow:
        sock.sendall(head + b'{"prompt": ')
    answers = []
    with contextlib.ExitStack() as stack:
        for sock in slow:
            stack.enter_context(dripping(sock))
        # Everyone else is served while the slow bodies trickle in.
        while time.monotonic() - started < 1.0:
            assert _models_ok(server)
        answers = [_answer(sock) for sock in slow]
    for status, answer, closed in answers:
        assert status == b"HTTP/1.1 408 Request Timeout", answer[:300]
        assert b'"type":"request_timeout"' in answer
        assert closed
    assert _credits(server) == before  # nothing was admitted or charged
    reconciled = server.cli("admin", "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    for sock in slow:
        sock.close()
    assert not any("Traceback" in line for line in server.output), "".join(server.output)


def test_a_large_body_on_a_slow_but_steady_link_gets_through(server_factory: Any) -> None:
    """Past the base timeout, every 16 KiB received buys another second."""
    server = server_factory(body_timeout_seconds=1).start()
    body = b'{"prompt": "' + b"a" * (96 * 1024) + b'"}'
    head = (
        "POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {server.demo_key}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with _connect(server) as sock:
        sock.sendall(head)
        for offset in range(0, len(body), 16 * 1024):
            sock.sendall(body[offset : offset + 16 * 1024])
            time.sleep(0.4)  # pacing the upload (16 KiB per 0.4 s), not synchronising
        status, answer, _closed = _answer(sock)
    assert time.monotonic() - started > 2  # well past the 1 s base timeout
    assert b"request_timeout" not in answer, answer[:300]
    assert status.startswith(b"HTTP/1.1 "), status
    assert status != b"HTTP/1.1 408 Request Timeout"


def test_half_sent_request_heads_are_dropped_at_their_timeout(server_factory: Any) -> None:
    server = server_factory(header_timeout_seconds=1).start()
    stalled = [_connect(server) for _ in range(100)]
    for sock in stalled:
        sock.sendall(b"GET /api/v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert _models_ok(server)  # the stalled ones hold only their own sockets
    for sock in stalled:
        status, _answer_bytes, closed = _answer(sock)
        assert closed, status  # within the header timeout (well before the 15 s read limit)
        assert status in (b"", b"HTTP/1.1 408 Request Timeout"), status
        sock.close()
    assert _models_ok(server)


def test_requests_beyond_the_cap_are_503_with_retry_after(server_factory: Any) -> None:
    server = server_factory(max_connections=3, body_timeout_seconds=30).start()
    head = (
        "POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        f"Authorization: Bearer {server.demo_key}\r\n\r\n"
    ).encode()
    holding = [_connect(server) for _ in range(3)]
    for sock in holding:
        sock.sendall(head)  # and the body never comes: each holds a request open

    def refused() -> requests.Response | None:
        answer = requests.get(server.url("/api/v1/models"), timeout=5)
        return answer if answer.status_code == 503 else None

    deadline = time.monotonic() + 10
    busy = refused()
    while busy is None and time.monotonic() < deadline:
        busy = refused()  # until the three have reached the app
    assert busy is not None
    assert busy.json()["type"] == "server_busy"
    assert int(busy.headers["Retry-After"]) >= 1
    for sock in holding:
        sock.close()  # their requests end: room again
    deadline = time.monotonic() + 10
    while not _models_ok(server):
        assert time.monotonic() < deadline, "the server did not free the places"
