"""GET /api/v1/credits: the caller's balance (read with its key, in one query)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from bananastand.api import schemas
from bananastand.api.deps import CurrentCaller

router = APIRouter(prefix="/api/v1", tags=["credits"])


@router.get(
    "/credits",
    summary="Read the account's credit balance",
    responses={200: {"model": schemas.CreditsBody}, **schemas.errors(401, 403)},
)
async def read_credits(caller: CurrentCaller) -> dict[str, Any]:
    return {"data": {"credits": caller.account.balance}}
