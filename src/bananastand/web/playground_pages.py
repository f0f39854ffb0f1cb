"""The playground: a form that runs a stream-mode generation for the signed-in
account and shows its events, charged like an API call; it can cancel the run.

Its stream carries the API's events byte for byte, plus one the API leaves out:
in a multi-image run, a `status` event as each image is done (`data.imageUrl`,
`data.imageIndex`), so the page shows it before the run ends.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError
from starlette.responses import JSONResponse, Response, StreamingResponse

from bananastand.accounts import AccountInfo, Caller
from bananastand.api.deps import ServicesDep
from bananastand.api.sse import STREAM_HEADERS, event_stream
from bananastand.errors import InvalidRequest
from bananastand.validation import GenerateParams
from bananastand.web.deps import PREFIX, SignedInDep, check_csrf_header, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _script_json(value: Any) -> str:
    """JSON for a `<script type="application/json">` element ("<" escaped)."""
    return json.dumps(value).replace("<", "\\u003c")


@router.get("/playground")
async def playground(request: Request, services: ServicesDep, signed: SignedInDep) -> Response:
    settings = services.settings
    models = [model.public() for model in services.catalog]
    limits = {
        "maxQuantity": settings.max_quantity,
        "maxPromptLength": settings.max_prompt_length,
        "maxReferences": settings.reference_max_count,
        "maxReferenceBytes": settings.reference_max_bytes,
        "isPro": signed.account.is_pro,
        "baseUrl": settings.base_url,
    }
    return render(
        request,
        "playground.html",
        models=models,
        models_json=_script_json(models),
        limits_json=_script_json(limits),
        balance=await services.billing.balance(signed.account.id),
        default_model=settings.default_model,
    )


class PlaygroundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr
    selectedModel: StrictStr | None = None
    aspectRatio: StrictStr | None = None
    quantity: StrictInt | StrictFloat | None = None
    referenceImageUrls: list[StrictStr] | None = None
    seed: StrictInt | None = None


@router.post("/playground/generate")
async def playground_generate(
    request: Request, services: ServicesDep, signed: SignedInDep
) -> Response:
    """The playground's call: stream mode, charged to the signed-in account."""
    check_csrf_header(request, signed)
    try:
        body = PlaygroundRequest.model_validate_json(await request.body())
    except ValidationError as exc:  # the API's own messages ("quantity must be a number")
        raise RequestValidationError(exc.errors(include_input=False)) from None
    submission = await services.generation.submit(
        Caller(account=AccountInfo.of(signed.account), key_id=None),
        GenerateParams(
            prompt=body.prompt,
            selected_model=body.selectedModel,
            reference_image_urls=body.referenceImageUrls,
            aspect_ratio=body.aspectRatio,
            quantity=body.quantity,
            mode="stream",
            seed=body.seed,
        ),
    )
    record = submission.record
    # The API's events, byte for byte, plus each image as soon as it is done.
    return StreamingResponse(
        event_stream(services, record.id, ids=False, opening=True, finished_images=True),
        media_type="text/event-stream",
        headers={
            **STREAM_HEADERS,
            "X-Generation-Id": record.id,
            "X-Generation-Seed": str(record.seed),
            # What the run took from the balance; the final event's creditsUsed is
            # what it kept: the page shows the difference as refunded.
            "X-Credits-Charged": str(record.credits_charged),
        },
    )


@router.delete("/playground/generate")
async def playground_cancel(
    request: Request, services: ServicesDep, signed: SignedInDep
) -> Response:
    """Cancel one of the signed-in account's runs (`?id=`), as `DELETE
    /api/v1/generate` does: it ends failed, and what it had not produced is refunded."""
    check_csrf_header(request, signed)
    generation_id = request.query_params.get("id", "").strip()
    if not generation_id or len(generation_id) > 64:
        raise InvalidRequest("id must be the id of a generation")
    record, changed = await services.generation.cancel(generation_id, account_id=signed.account.id)
    return JSONResponse(
        {
            "success": changed,
            "message": "Cancelled" if changed else f"Already {record.state}; nothing changed",
            "generationId": record.id,
            "creditsUsed": record.credits_used,
            "refunded": record.credits_charged - record.credits_used,
            "remainingCredits": await services.billing.balance(signed.account.id),
        }
    )
