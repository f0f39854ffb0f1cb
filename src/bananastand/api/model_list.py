"""GET /api/v1/models: the model catalogue (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from bananastand.api import schemas
from bananastand.api.direct import DirectRoute
from bananastand.container import Services

router = APIRouter(prefix="/api/v1", tags=["models"], route_class=DirectRoute)


@router.get(
    "/models",
    summary="List the models on offer (no authentication)",
    responses={200: {"model": schemas.ModelList}},
)
async def list_models(request: Request) -> Response:
    services: Services = request.app.state.services
    return JSONResponse({"data": [model.public() for model in services.catalog]})
