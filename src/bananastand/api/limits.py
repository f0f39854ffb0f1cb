"""ASGI middleware that caps what a request may send: its head (request line and
headers, 431) and its body (413, by Content-Length and by counting what arrives).

The HTTP server refuses far larger heads itself before buffering them (see
`server`); this makes the configured limit exact.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestSizeLimits:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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
            await _refuse(send, 431, message, "headers_too_large")
            return
        if declared > self.max_body_bytes:
            await _refuse(send, 413, self._body_message, "payload_too_large")
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # FastAPI passes HTTPException through body parsing; the error
                    # boundary renders it as the contract's JSON.
                    raise HTTPException(413, detail=self._body_message)
            return message

        await self.app(scope, counting_receive, send)

    @property
    def _body_message(self) -> str:
        return f"Request body too large (limit {self.max_body_bytes} bytes)"


async def _refuse(send: Send, status: int, message: str, kind: str) -> None:
    body = json.dumps({"error": message, "type": kind}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
