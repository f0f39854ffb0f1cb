"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bananastand import metrics
from bananastand.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database (and Redis and the queue) answer")
async def readyz(services: ServicesDep) -> JSONResponse:
    checks = await services.check_dependencies()
    ready = all(state == "up" for state in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(services: ServicesDep) -> Response:
    registry = await metrics.refresh(services.generation.generations.queue_depth)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
