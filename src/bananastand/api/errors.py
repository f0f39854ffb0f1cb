"""The one error boundary: domain errors, validation errors and anything
unexpected become the contract's JSON (`{"error": …, "type": …}`), or OpenAI's
(`{"error": {"message", "type", "param", "code"}}`) under its paths
(`OPENAI_PREFIX`). Stack traces go to the server log only, once each. A database
that cannot be reached is a 503 `server_busy` with Retry-After (the request may
be retried), not a 500."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bananastand.errors import BananastandError, InvalidRequest, ServerBusy

log = logging.getLogger(__name__)

OPENAI_PREFIX = "/v1/"  # OpenAI-compatible endpoints answer errors in OpenAI's shape
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}

_HTTP_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(exc: BananastandError) -> JSONResponse:
    """The contract's shape: `{"error": message, "type": …, …extra}`."""
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def openai_error_response(exc: BananastandError) -> JSONResponse:
    """OpenAI's shape; `code` is Bananastand's error type, extras kept beside it."""
    kind = _OPENAI_TYPES.get(
        exc.status, "server_error" if exc.status >= 500 else "invalid_request_error"
    )
    error: dict[str, Any] = {"message": exc.message, "type": kind, "param": None, "code": exc.type}
    error.update({k: v for k, v in exc.extra.items() if k not in ("success", "error")})
    return JSONResponse({"error": error}, status_code=exc.status, headers=exc.headers)


class TypedHTTPException(StarletteHTTPException):
    """A typed error in the one form FastAPI's body parsing lets through (it turns
    anything else raised while reading a body into its own 400); used by the
    request-limits middleware. `from_http_exception` hands the typed error back."""

    def __init__(self, error: BananastandError) -> None:
        super().__init__(error.status, error.message, error.headers or None)
        self.error = error


def from_http_exception(exc: StarletteHTTPException) -> BananastandError:
    """Starlette's and FastAPI's HTTP errors (a 404 without a route, a 405, a body
    cut short) as typed errors, so they render like every other."""
    if isinstance(exc, TypedHTTPException):
        return exc.error
    error = BananastandError(
        exc.detail if isinstance(exc.detail, str) else "Request failed",
        headers=getattr(exc, "headers", None),
    )
    error.status = exc.status_code  # type: ignore[misc]
    error.type = _HTTP_TYPES.get(exc.status_code, "error")  # type: ignore[misc]
    return error


def response_for(path: str, exc: BananastandError) -> JSONResponse:
    """The error in the shape the endpoint at `path` speaks."""
    if path.startswith(OPENAI_PREFIX):
        return openai_error_response(exc)
    return error_response(exc)


# What each request field must be, for messages that name the field, not the parser.
_FIELD_TYPES = {
    "prompt": "a string",
    "selectedModel": "a string (a model name from /api/v1/models)",
    "referenceImageUrls": "an array of URL strings",
    "aspectRatio": 'a string such as "16:9"',
    "quantity": "a number",
    "mode": 'one of "sync", "stream", "async"',
    "seed": "an integer",
    "id": "a generation id",
    "callbackUrl": "a URL string",
}


def _describe(errors: list[dict]) -> str:  # type: ignore[type-arg]
    """One readable sentence per offending field, in the order they came."""
    messages: dict[str, str] = {}
    for error in errors:
        kind = error.get("type", "")
        location = [p for p in error.get("loc", ()) if p not in ("body", "query")]
        if kind == "json_invalid":
            return "Malformed JSON in the request body"
        if not location:
            if kind == "missing":
                return "A JSON request body is required"
            return "The request body must be a JSON object"
        field = str(location[0])
        if field in messages:
            continue
        if kind == "missing":
            messages[field] = f"{field} is required"
        elif field in _FIELD_TYPES:
            messages[field] = f"{field} must be {_FIELD_TYPES[field]}"
        else:
            messages[field] = f"{field}: {error.get('msg', 'invalid value')}"
    return "; ".join(messages.values()) or "Invalid request"


# Renders an error as a page for requests a browser made to the console; None: JSON.
# (Async: a page with no route behind it, a 404, looks up who is signed in.)
PageRenderer = Callable[[Request, BananastandError], Awaitable[Response | None]]
Respond = Callable[[Request, BananastandError], Awaitable[Response]]


def install(app: FastAPI, *, pages: PageRenderer | None = None) -> None:
    async def respond(request: Request, exc: BananastandError) -> Response:
        page = await pages(request, exc) if pages is not None else None
        return page if page is not None else response_for(request.scope["path"], exc)

    @app.exception_handler(BananastandError)
    async def _domain(request: Request, exc: BananastandError) -> Response:
        return await respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": _describe(list(exc.errors())), "type": "invalid_request"}, status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return await respond(request, from_http_exception(exc))

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> Response:
        # The database refused a value the client sent (PostgreSQL: text with NUL
        # characters, or too long for its column). Not the server's fault.
        log.info("refused an unstorable value on %s %s", request.method, request.url.path)
        return await respond(
            request,
            InvalidRequest(
                "A value in the request cannot be stored: text must not contain NUL "
                "characters and must fit its field"
            ),
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_down(request: Request, exc: Exception) -> Response:
        cause = getattr(exc, "orig", None) or exc
        first_line = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
        log.warning(
            "database unavailable on %s %s: %s: %s",
            request.method,
            request.url.path,
            type(cause).__name__,
            first_line,
        )
        return await respond(request, database_down())

    # Anything else: not through Starlette's catch-all handler, which logs the
    # traceback and then re-raises it for the server to log again.
    app.add_middleware(ErrorBoundary, respond=respond)


def database_down() -> ServerBusy:
    return ServerBusy("Server busy: its database is unavailable; retry shortly", retry_after=5)


class ErrorBoundary:
    """The last word on an HTTP request that raised: a client that went away gets
    nothing (and is no error); anything else is logged once, with its traceback,
    and answered 500 `internal_error` when no answer has begun."""

    def __init__(self, app: ASGIApp, respond: Respond):
        self.app = app
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except ClientDisconnect:
            log.debug("client went away during %s %s", scope["method"], scope["path"])
        except Exception:
            log.exception("internal error on %s %s", scope["method"], scope["path"])
            if not started:
                request = Request(scope, receive)
                answer = await self.respond(request, BananastandError())
                await answer(scope, receive, send)
