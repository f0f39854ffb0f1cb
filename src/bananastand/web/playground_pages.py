"""The playground: a form that runs a stream-mode generation for the signed-in
account and shows its events, charged like an API call."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError
from starlette.responses import Response, StreamingResponse

from bananastand.accounts import AccountInfo, Caller
from bananastand.api.deps import ServicesDep
from bananastand.api.generate import STREAM_HEADERS, event_stream
from bananastand.validation import GenerateParams
from bananastand.web.deps import PREFIX, SignedInDep, check_csrf_header, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/playground")
async def playground(request: Request, services: ServicesDep, signed: SignedInDep) -> Response:
    models = [model.public() for model in services.catalog]
    return render(
        request,
        "playground.html",
        models=models,
        # "<" escaped: the JSON sits inside a <script> element.
        models_json=json.dumps(models).replace("<", "\\u003c"),
        balance=await services.billing.balance(signed.account.id),
        default_model=services.settings.default_model,
    )


class PlaygroundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr
    selectedModel: StrictStr | None = None
    aspectRatio: StrictStr | None = None
    quantity: StrictInt | StrictFloat | None = None
    referenceImageUrls: list[StrictStr] | None = None


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
            seed=None,
        ),
    )
    # The same events, byte for byte, as the API's stream mode.
    return StreamingResponse(
        event_stream(services, submission.record.id, ids=False, opening=True),
        media_type="text/event-stream",
        headers={**STREAM_HEADERS, "X-Generation-Id": submission.record.id},
    )
