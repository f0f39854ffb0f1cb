"""The API's hot paths, answered without FastAPI's per-request machinery.

A `DirectRoute` is documented like any other route (OpenAPI, `/docs`), but its
endpoint takes the `Request` and answers a `Response` itself: it reads its own
parameters (`query_text`, `query_int`) and authenticates with `caller(request)`.
`HotPaths` (the first route of the app) finds these endpoints with one dict
lookup by method and path, instead of trying every route in turn, and calls them
directly. On a request that does one indexed read, FastAPI's dependency
resolution, validation and response serialisation cost more than the work; the
error boundary (`errors.install`) and the middleware are the same for every route.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from bananastand.accounts import Caller
from bananastand.errors import InvalidRequest, Unauthorized

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]
# `openapi_extra` of a route that needs an API key.
KEY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


class DirectRoute(APIRoute):
    """A route whose endpoint is `async def endpoint(request) -> Response`, called as is."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        parameters = list(inspect.signature(endpoint).parameters)
        if parameters != ["request"]:
            raise TypeError(f"{endpoint.__name__}: a direct endpoint takes only `request`")
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Endpoint:
        return self.endpoint


class HotPaths(BaseRoute):
    """Dispatches the `DirectRoute`s of some routers by (method, path) in one lookup."""

    def __init__(self, routers: Iterable[APIRouter]) -> None:
        self._table: dict[tuple[str, str], tuple[Endpoint, APIRoute]] = {}
        for router in routers:
            for route in router.routes:
                if isinstance(route, DirectRoute) and "{" not in route.path:
                    handler = route.get_route_handler()
                    for method in route.methods or ():
                        self._table[(method, route.path)] = (handler, route)
                        if method == "GET":
                            self._table[("HEAD", route.path)] = (handler, route)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            found = self._table.get((scope["method"], scope["path"]))
            if found is not None:
                return Match.FULL, {"endpoint": found[0], "route": found[1]}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await scope["endpoint"](Request(scope, receive, send))
        await response(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, path_params)


async def caller(request: Request) -> Caller:
    """The account behind the request's API key (401/403 otherwise)."""
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        raise Unauthorized("Send exactly one Authorization header")
    return await request.app.state.services.accounts.authenticate(  # type: ignore[no-any-return]
        headers[0] if headers else None
    )


def query_text(request: Request, name: str, *, what: str, max_length: int = 64) -> str | None:
    """An optional text query parameter; 400 when empty or too long."""
    value = request.query_params.get(name)
    if value is not None and (not value or len(value) > max_length):
        raise InvalidRequest(f"{name} must be {what}")
    return value


def query_required(request: Request, name: str, *, what: str, max_length: int = 64) -> str:
    """A text query parameter that must be there; 400 when missing, empty or too long."""
    value = query_text(request, name, what=what, max_length=max_length)
    if value is None:
        raise InvalidRequest(f"{name} is required")
    return value


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; 400 otherwise."""
    value = request.query_params.get(name)
    if value is None:
        return default
    text = value.strip()
    if not (text.lstrip("-").isdigit() and len(text) <= 12) or not low <= int(text) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def query_flag(request: Request, name: str, *, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise InvalidRequest(f"{name} must be true or false")


def parameter(
    name: str, description: str, *, required: bool = False, **schema: Any
) -> dict[str, Any]:
    """An OpenAPI query parameter, for a `DirectRoute`'s `openapi_extra`."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }
