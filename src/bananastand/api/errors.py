"""The one error boundary: domain errors, validation errors and anything
unexpected become the contract's JSON (`{"error": …, "type": …}`). Stack traces
go to the server log only."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from bananastand.errors import BananastandError, InvalidRequest

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(exc: BananastandError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


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
PageRenderer = Callable[[Request, BananastandError], Response | None]


def install(app: FastAPI, *, pages: PageRenderer | None = None) -> None:
    def respond(request: Request, exc: BananastandError) -> Response:
        page = pages(request, exc) if pages is not None else None
        return page if page is not None else error_response(exc)

    @app.exception_handler(BananastandError)
    async def _domain(request: Request, exc: BananastandError) -> Response:
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": _describe(list(exc.errors())), "type": "invalid_request"}, status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        error = BananastandError(
            exc.detail if isinstance(exc.detail, str) else "Request failed",
            headers=getattr(exc, "headers", None),
        )
        error.status = exc.status_code  # type: ignore[misc]
        error.type = _HTTP_TYPES.get(exc.status_code, "error")  # type: ignore[misc]
        return respond(request, error)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> Response:
        # The database refused a value the client sent (PostgreSQL: text with NUL
        # characters, or too long for its column). Not the server's fault.
        log.info("refused an unstorable value on %s %s", request.method, request.url.path)
        return respond(
            request,
            InvalidRequest(
                "A value in the request cannot be stored: text must not contain NUL "
                "characters and must fit its field"
            ),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return respond(request, BananastandError())
