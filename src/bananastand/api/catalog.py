"""GET /api/v1/models: the model catalogue (no authentication)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from bananastand.api import schemas
from bananastand.api.deps import ServicesDep

router = APIRouter(prefix="/api/v1", tags=["models"])


@router.get(
    "/models",
    summary="List the models on offer (no authentication)",
    responses={200: {"model": schemas.ModelList}},
)
async def list_models(services: ServicesDep) -> dict[str, Any]:
    return {"data": [model.public() for model in services.catalog]}
