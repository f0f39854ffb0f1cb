"""POST and GET /api/v1/generate: the three modes and polling; GET
/api/v1/generate/stream: following or resuming a generation's event stream.

Stream events are numbered (see `progress`). The contract's POST stream sends
them as it always did (`data:` lines only) unless the client opts in with
`X-Stream-Event-Ids: true`; then each event also has an `id:` line, and the
opening "Starting generation..." event is number 0. The resume endpoint always
sends ids, and after a `Last-Event-ID` only what that client has not had.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from bananastand.api import schemas
from bananastand.api.direct import (
    KEY,
    DirectRoute,
    caller,
    parameter,
    query_flag,
    query_int,
    query_required,
    query_text,
)
from bananastand.api.sse import STREAM_HEADERS, event_stream
from bananastand.container import Services
from bananastand.contract_json import record_view, sync_result
from bananastand.errors import GenerationFailed, InvalidRequest
from bananastand.validation import GenerateParams

router = APIRouter(prefix="/api/v1", tags=["generate"], route_class=DirectRoute)


class GenerateRequest(BaseModel):
    """The contract's request body. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr = Field(description="What to draw; non-empty after trimming.")
    selectedModel: StrictStr | None = Field(None, description="Model name from /api/v1/models.")
    referenceImageUrls: list[StrictStr] | None = Field(
        None, description="http(s) or data:image URLs; non-empty means image-to-image."
    )
    aspectRatio: StrictStr | None = Field(None, description='"default" or one of the model\'s.')
    quantity: StrictInt | StrictFloat | None = Field(
        None, description="Images to make; clamped into 1..maxQuantity."
    )
    mode: StrictStr | None = Field(None, description="sync (default), stream or async.")
    seed: StrictInt | None = Field(None, description="Extension: fixes the output.")
    callbackUrl: StrictStr | None = Field(
        None,
        description="Extension: a public http(s) URL that gets the poll answer, signed the "
        "Standard Webhooks way, when the generation ends.",
    )
    previews: StrictBool | None = Field(
        None,
        description="Extension: `false` turns off stream previews (`data.previewImage` on "
        "status events).",
    )


GENERATION_ID = parameter("id", "Generation id", required=True, type="string", maxLength=64)
EVENT_IDS_HEADER = "X-Stream-Event-Ids"


def _generation_id(request: Request) -> str:
    return query_required(request, "id", what="a generation id")


def _wants_event_ids(request: Request) -> bool:
    return request.headers.get(EVENT_IDS_HEADER, "").strip().lower() in ("true", "1", "yes")


def _last_event_id(value: str | None) -> int | None:
    """The `Last-Event-ID` header as the number of an event; blank means none."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidRequest("Last-Event-ID must be the id of an event this server sent")
    return int(text)


async def _parse(request: Request) -> GenerateRequest:
    """The body is JSON whatever Content-Type says (`curl -d` sends a form type)."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("A JSON request body is required")
    try:
        return GenerateRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False)) from None


@router.post(
    "/generate",
    summary="Generate images (sync, stream or async)",
    openapi_extra={
        **KEY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}},
        },
    },
    responses={
        200: {
            "description": "sync: the result (or a safety warning); stream: an SSE stream of "
            "StreamEvent lines; async: accepted",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/SyncSuccess"},
                            {"$ref": "#/components/schemas/SyncWarning"},
                            {"$ref": "#/components/schemas/AsyncAccepted"},
                        ]
                    }
                },
                "text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}},
            },
        },
        **schemas.errors(400, 401, 402, 403, 413, 429, 502, 503),
    },
)
async def generate(request: Request) -> Response:
    who = await caller(request)
    body = await _parse(request)
    services: Services = request.app.state.services
    service = services.generation
    submission = await service.submit(
        who,
        GenerateParams(
            prompt=body.prompt,
            selected_model=body.selectedModel,
            reference_image_urls=body.referenceImageUrls,
            aspect_ratio=body.aspectRatio,
            quantity=body.quantity,
            mode=body.mode,
            seed=body.seed,
            callback_url=body.callbackUrl,
        ),
        idempotency_key=request.headers.get("idempotency-key"),
        previews=body.previews is not False,
    )
    record = submission.record
    replay_headers = {"Idempotent-Replayed": "true"} if submission.replayed else {}
    if record.mode == "async":
        return JSONResponse(
            {
                "success": True,
                "async": True,
                "generationId": record.id,
                "message": "Generation started. Use GET /api/v1/generate?id="
                f"{record.id} to poll for results.",
                "creditsUsed": record.credits_charged,
                "remainingCredits": submission.balance,
            },
            headers=replay_headers,
        )
    if record.mode == "stream":
        return StreamingResponse(
            event_stream(
                services,
                record.id,
                ids=_wants_event_ids(request),
                opening=True,
                previews=body.previews is not False,
            ),
            media_type="text/event-stream",
            headers={**STREAM_HEADERS, "X-Generation-Id": record.id, **replay_headers},
        )
    # sync: the generation runs detached; a client that leaves does not stop it.
    final, balance = await service.outcome(record.id)
    if final.state == "failed":
        raise GenerationFailed(
            final.error_message or "Generation failed",
            extra={
                "success": False,
                "generationId": final.id,
                "creditsUsed": final.credits_used,
                "remainingCredits": balance,
            },
        )
    return JSONResponse(sync_result(final, balance, service.signer), headers=replay_headers)


@router.get(
    "/generate/stream",
    summary="Follow or resume a generation's event stream (extension)",
    responses={
        200: {
            "description": "An SSE stream of StreamEvent lines, each with an `id:` line; "
            "after a `Last-Event-ID`, only the events that client has not had",
            "content": {
                "text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamEvent"}}
            },
        },
        204: {"description": "The client has had the final event: nothing more to send"},
        **schemas.errors(400, 401, 403, 404),
    },
    openapi_extra={
        **KEY,
        "parameters": [
            GENERATION_ID,
            parameter(
                "previews", "`false`: leave stream previews out", type="boolean", default=True
            ),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "The id of the last event received; the stream continues after it",
                "schema": {"type": "string"},
            },
        ],
    },
)
async def resume_stream(request: Request) -> Response:
    who = await caller(request)
    generation_id = _generation_id(request)
    previews = query_flag(request, "previews", default=True)
    after = _last_event_id(request.headers.get("last-event-id"))
    services: Services = request.app.state.services
    record = await services.generation.generations.get(generation_id, account_id=who.account.id)
    if after is not None and await services.generation.stream_delivered(record.id, after=after):
        return Response(status_code=204)
    return StreamingResponse(
        event_stream(services, record.id, ids=True, after=after, previews=previews),
        media_type="text/event-stream",
        headers={**STREAM_HEADERS, "X-Generation-Id": record.id},
    )


@router.get(
    "/generate",
    summary="Read one generation record",
    responses={200: {"model": schemas.GenerationEnvelope}, **schemas.errors(400, 401, 403, 404)},
    openapi_extra={
        **KEY,
        "parameters": [GENERATION_ID],
    },
)
async def get_generation(request: Request) -> Response:
    who = await caller(request)
    generation_id = _generation_id(request)
    services: Services = request.app.state.services
    record = await services.generation.generations.get(generation_id, account_id=who.account.id)
    return JSONResponse({"data": record_view(record, services.generation.signer)})


@router.get(
    "/generations",
    summary="List the account's generations, newest first (extension)",
    responses={200: {"model": schemas.GenerationList}, **schemas.errors(400, 401, 403, 404)},
    openapi_extra={
        **KEY,
        "parameters": [
            parameter(
                "limit", "Records per page", type="integer", minimum=1, maximum=100, default=20
            ),
            parameter("before", "`nextBefore` of the last page", type="string", maxLength=64),
        ],
    },
)
async def list_generations(request: Request) -> Response:
    who = await caller(request)
    limit = query_int(request, "limit", default=20, low=1, high=100)
    before = query_text(request, "before", what="the `nextBefore` of a page")
    services: Services = request.app.state.services
    records = await services.generation.generations.page(who.account.id, limit=limit, before=before)
    signer = services.generation.signer
    return JSONResponse(
        {
            "data": [record_view(record, signer) for record in records],
            "nextBefore": records[-1].id if len(records) == limit else None,
        }
    )


@router.delete(
    "/generate",
    summary="Cancel a waiting or running generation (extension)",
    responses={200: {"model": schemas.GenerationEnvelope}, **schemas.errors(400, 401, 403, 404)},
    openapi_extra={
        **KEY,
        "parameters": [GENERATION_ID],
    },
)
async def cancel_generation(request: Request) -> Response:
    who = await caller(request)
    generation_id = _generation_id(request)
    services: Services = request.app.state.services
    record, changed = await services.generation.cancel(generation_id, account_id=who.account.id)
    status = "cancelled" if changed else f"already {record.state}; nothing changed"
    return JSONResponse(
        {
            "success": changed,
            "message": f"Generation {status}",
            "data": record_view(record, services.generation.signer),
        }
    )
