"""ASGI middleware that caps what requests may take: how many are worked on at
once (503 beyond `max_requests`), a request's head (request line and headers,
431), its body (413, by Content-Length and by counting what arrives) and the
time its body may take to arrive (408): `body_timeout_seconds` from the head, plus
a second for every `BODY_BYTES_PER_SECOND` received, so a large upload on a slow
but steady link gets through while a body dripped in a byte at a time does not.

The HTTP server refuses far larger heads itself before buffering them, and heads
that take too long (see `server`); this makes the configured limits exact.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bananastand.api.errors import TypedHTTPException, response_for
from bananastand.errors import (
    BananastandError,
    HeadersTooLarge,
    PayloadTooLarge,
    RequestTimeout,
    ServerBusy,
)

BUSY_RETRY_AFTER = 1  # seconds: requests end all the time
BODY_BYTES_PER_SECOND = 16 * 1024  # the slowest upload rate given extra time


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_header_bytes: int,
        body_timeout_seconds: float,
        max_requests: int,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.max_requests = max_requests
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_requests:
            message = "Server busy: too many requests at once; retry shortly"
            await _refuse(scope, receive, send, ServerBusy(message, retry_after=BUSY_RETRY_AFTER))
            return
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
        declared = 0
        for name, value in scope.get("headers", ()):
            head += len(name) + len(value) + 4
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
        if head > self.max_header_bytes:
            message = f"Request headers too large (limit {self.max_header_bytes} bytes)"
            await _refuse(scope, receive, send, HeadersTooLarge(message))
            return
        if declared > self.max_body_bytes:
            await _refuse(scope, receive, send, PayloadTooLarge(self._body_message))
            return
        received = 0
        body_done = False
        loop = asyncio.get_running_loop()
        started = loop.time()

        # Typed errors, carried as `TypedHTTPException`: FastAPI passes only those
        # through body parsing, and the error boundary renders them in the shape
        # of the endpoint (the contract's JSON, or OpenAI's on /v1).
        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # afterwards the app only listens for a disconnect
                return await receive()
            deadline = started + self.body_timeout_seconds + received / BODY_BYTES_PER_SECOND
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                late = RequestTimeout(
                    f"The request body did not arrive in time ({received} bytes in "
                    f"{loop.time() - started:.0f} seconds)",
                    headers={"Connection": "close"},
                )
                raise TypedHTTPException(late) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise TypedHTTPException(PayloadTooLarge(self._body_message))
            return message

        self.in_flight += 1
        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.in_flight -= 1

    @property
    def _body_message(self) -> str:
        return f"Request body too large (limit {self.max_body_bytes} bytes)"


async def _refuse(scope: Scope, receive: Receive, send: Send, error: BananastandError) -> None:
    """Answer before the app sees the request, in the shape its endpoint speaks (the
    error boundary's), and close the connection: its body is not read."""
    response = response_for(scope.get("path", ""), error)
    response.headers["Connection"] = "close"
    await response(scope, receive, send)
