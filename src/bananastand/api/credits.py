"""GET /api/v1/credits: the caller's balance (read with its key, in one query)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from bananastand.api import schemas
from bananastand.api.direct import KEY, DirectRoute, caller

router = APIRouter(prefix="/api/v1", tags=["credits"], route_class=DirectRoute)


@router.get(
    "/credits",
    summary="Read the account's credit balance",
    responses={200: {"model": schemas.CreditsBody}, **schemas.errors(401, 403)},
    openapi_extra=KEY,
)
async def read_credits(request: Request) -> Response:
    who = await caller(request)
    return JSONResponse({"data": {"credits": who.account.balance}})
