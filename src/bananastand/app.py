"""`create_app(settings)`: the web application, wired explicitly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bananastand import __version__
from bananastand.api import catalog, credits, errors, generate, health, images
from bananastand.api.limits import BodySizeLimit
from bananastand.config import Settings
from bananastand.services import Services


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
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="Bananastand",
        version=__version__,
        description="Self-hosted Nano Banana image-generation API.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    errors.install(app)
    for module in (generate, catalog, credits, images, health):
        app.include_router(module.router)
    return app
