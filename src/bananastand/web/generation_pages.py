"""The account's generations (history, detail, cancel) and the playground."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError
from starlette.responses import Response, StreamingResponse

from bananastand.accounts import AccountInfo, Caller
from bananastand.api.deps import ServicesDep
from bananastand.api.generate import STREAM_HEADERS, event_stream
from bananastand.errors import NotFound
from bananastand.validation import GenerateParams
from bananastand.views import image_urls, processing_status
from bananastand.web.deps import (
    PREFIX,
    CsrfForm,
    SignedInDep,
    check_csrf_header,
    redirect,
    render,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 20


@router.get("/generations")
async def history(request: Request, services: ServicesDep, signed: SignedInDep) -> Response:
    before = request.query_params.get("before") or None
    try:
        rows = await services.generation.generations.page(
            signed.account.id, limit=PAGE_SIZE + 1, before=before
        )
    except NotFound:  # a stale or mangled "Older" link: start from the newest
        return redirect(f"{PREFIX}/generations")
    signer = services.generation.signer
    return render(
        request,
        "generations.html",
        rows=[_row(record, signer) for record in rows[:PAGE_SIZE]],
        next_before=rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None,
        first_page=before is None,
    )


def _row(record: Any, signer: Any) -> dict[str, Any]:
    live = [image for image in record.images if image.deleted_at is None]
    return {
        "record": record,
        "status": processing_status(record),
        "urls": image_urls(record, signer) if live else [],
        "expires_at": min((image.expires_at for image in live), default=None),
    }


@router.get("/generations/{generation_id}")
async def detail(
    generation_id: str, request: Request, services: ServicesDep, signed: SignedInDep
) -> Response:
    # Scoped to the account: another account's generation is "not found".
    record = await services.generation.generations.get(generation_id, account_id=signed.account.id)
    return render(
        request,
        "generation.html",
        row=_row(record, services.generation.signer),
        cancelled=request.query_params.get("done") == "cancelled",
    )


@router.post("/generations/{generation_id}/cancel")
async def cancel(
    generation_id: str, services: ServicesDep, signed: SignedInDep, _form: CsrfForm
) -> Response:
    await services.generation.cancel(generation_id, account_id=signed.account.id)
    return redirect(f"{PREFIX}/generations/{generation_id}?done=cancelled")


# --- playground --------------------------------------------------------------------------
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
