"""`POST /webhooks/stripe`: where Stripe delivers the events of the payments the
console started (see `payments`). Not part of the client API (left out of the
OpenAPI document); the README says what to register at Stripe."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bananastand.api.deps import ServicesDep

router = APIRouter(include_in_schema=False)


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request, services: ServicesDep) -> JSONResponse:
    """200 once the event is applied (or was already, or is not for this server);
    400 when its signature does not verify; 5xx makes Stripe deliver it again."""
    payload = await request.body()
    outcome = await services.payments.handle(payload, request.headers.get("stripe-signature"))
    return JSONResponse({"received": True, "outcome": outcome})
