"""The web console: server-rendered pages on the same services as the API.

`install(app)` mounts the pages, their static files and their security headers;
errors on console pages render as pages (see `deps.error_page`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bananastand.web import (
    account_pages,
    admin_pages,
    generation_pages,
    playground_pages,
    recharge_pages,
    usage_pages,
)
from bananastand.web.deps import CONSOLE_HEADERS, PREFIX, error_page

__all__ = ["error_page", "install"]

# Replaced (not doubled) on console responses.
_REPLACED = {name for name, _value in CONSOLE_HEADERS} | {b"cache-control"}


class ConsoleHeaders:
    """Security headers on every console response; pages are never cached.

    Static files keep their own Cache-Control, and so do event streams (the
    playground's): theirs is the stream's own (`no-cache`, see `STREAM_HEADERS`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(PREFIX + "/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                original = list(message.get("headers", []))
                keep_cache = static or any(
                    name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in original
                )
                headers = [
                    (name, value)
                    for name, value in original
                    if name.lower() not in _REPLACED
                    or (keep_cache and name.lower() == b"cache-control")
                ]
                headers.extend(CONSOLE_HEADERS)
                if not keep_cache:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    app.add_middleware(ConsoleHeaders)
    app.mount(
        f"{PREFIX}/static",
        StaticFiles(directory=Path(__file__).parent / "static"),
        name="console-static",
    )
    modules = (
        account_pages,
        generation_pages,
        playground_pages,
        usage_pages,
        recharge_pages,
        admin_pages,
    )
    for module in modules:
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(PREFIX, status_code=307)
