"""`create_app(settings)`: the web application, wired explicitly."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from bananastand import __version__, web
from bananastand.api import (
    credits,
    errors,
    generate,
    health,
    images,
    model_list,
    openai_compat,
    payments,
    schemas,
)
from bananastand.api.deps import current_caller
from bananastand.api.direct import HotPaths
from bananastand.api.request_limits import RequestLimits
from bananastand.config import Settings
from bananastand.container import Services
from bananastand.metrics import RequestMetrics


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    on_ready: Callable[[Services], None] | None = None,
) -> FastAPI:
    settings = settings or Settings()
    services = services or Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        if on_ready is not None:
            on_ready(services)
        # Everything built so far lives as long as the process: the collector's
        # full passes need not walk it again and again.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="Bananastand",
        version=__version__,
        description="Self-hosted Nano Banana image-generation API.",
        lifespan=lifespan,
        # Prometheus metrics (`metrics.py`) are this server's telemetry; FastAPI's
        # built-in OpenTelemetry hooks would only cost time on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
        max_requests=settings.max_connections,
    )
    errors.install(app, pages=web.error_page)  # its boundary: inside the metrics
    app.add_middleware(RequestMetrics)
    # The hot paths first: one lookup finds them (see `api.direct`).
    app.router.routes.append(
        HotPaths([generate.router, model_list.router, credits.router, openai_compat.router])
    )
    for module in (generate, model_list, credits, images, health, openai_compat, payments):
        app.include_router(module.router)
    web.install(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _needs_key(route: APIRoute) -> bool:
    return any(d.call is current_caller for d in route.dependant.dependencies)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, less the 422 answers this API never gives (bad input is 400),
    plus the response schemas the routers describe by reference."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    # API keys: declared here rather than by a per-request security dependency.
    spec.setdefault("components", {})["securitySchemes"] = {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer nb_…`",
        }
    }
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema and _needs_key(route):
            for method in route.methods or ():
                operation = spec["paths"][route.path_format].get(method.lower())
                if operation is not None:
                    operation["security"] = [{"HTTPBearer": []}]
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for model in (
        schemas.SyncSuccess,
        schemas.SyncWarning,
        schemas.AsyncAccepted,
        schemas.StreamEvent,
    ):
        model_schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}", by_alias=True
        )
        for name, definition in model_schema.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, model_schema)
    app.openapi_schema = spec
    return spec
