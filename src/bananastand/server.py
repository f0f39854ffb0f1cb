"""Serving the web app over HTTP: Granian, embedded in this process.

Granian parses HTTP and keeps connections in Rust, off the Python thread, so the
event loop spends its time on the application; measured side by side (`bench/`),
the same app answers a cheap authenticated read with a fifth to a third less
server CPU than on uvicorn with httptools. It runs inside this process's own
event loop (uvloop): the embedded default keeps its job runner and progress
channels in memory, and there is no supervisor process to outlive a `kill -9`.

Limits that protect the server come from the settings: the request head (line
and headers) must arrive within `header_timeout_seconds`, and is capped at
`max_header_bytes` (larger: 431 and the connection closed). Granian refuses a
head before buffering more than about twice that (its read buffer grows in
steps); `api.request_limits` makes the limit exact. SIGTERM or SIGINT stop
accepting connections, let open requests finish within `shutdown_grace_seconds`,
then run the app's shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, cast

import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from bananastand.config import Settings

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

log = logging.getLogger(__name__)

LISTEN_WAIT_SECONDS = 60
BUSY_HEADROOM = 256


def run(app: ASGIApp, settings: Settings) -> None:
    """Serve `app` until SIGTERM or SIGINT."""
    uvloop.run(_serve(app, settings))


async def _serve(app: ASGIApp, settings: Settings) -> None:
    server = Server(
        # Client address and scheme from X-Forwarded-* only when a trusted proxy sent them.
        ProxyHeadersMiddleware(
            cast("ASGI3Application", app), trusted_hosts=settings.forwarded_allow_ips
        ),
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        # Connections served at once: room beyond the app's own cap on requests
        # (`max_connections`), so that one more gets its 503 rather than a wait.
        backpressure=settings.max_connections + BUSY_HEADROOM,
        http1_settings=HTTP1Settings(
            header_read_timeout=int(settings.header_timeout_seconds * 1000),
            max_buffer_size=settings.max_header_bytes,
        ),
        log_enabled=False,  # this process logs for itself (and prints its own banner)
    )
    # Open requests get the grace period; then the app shuts down regardless.
    server.workers_kill_timeout = max(1, round(settings.shutdown_grace_seconds))
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, server.stop)
    announcing = asyncio.create_task(_announce_when_listening(settings))
    try:
        await server.serve()
    finally:
        announcing.cancel()


async def _announce_when_listening(settings: Settings) -> None:
    """Print "Listening on …" once a connection to the port succeeds: the line
    scripts (and people) can wait for before sending requests."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104
        settings.host, settings.host
    )
    try:
        async with asyncio.timeout(LISTEN_WAIT_SECONDS):
            while True:
                try:
                    _reader, writer = await asyncio.open_connection(host, settings.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                break
    except TimeoutError:
        log.warning("not listening on port %d after %d s", settings.port, LISTEN_WAIT_SECONDS)
        return
    print(
        f"Listening on http://{settings.host}:{settings.port} (Ctrl+C stops the server)",
        flush=True,
    )
