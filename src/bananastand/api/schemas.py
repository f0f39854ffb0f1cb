"""Response shapes of the contract, for the OpenAPI document. Routers return
plain dicts built in `contract_json`; these models describe them (and a test checks that
real answers validate against them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="Human-readable message")
    type: str = Field(description="Stable machine code, e.g. invalid_request")


class ConcurrencyErrorBody(ErrorBody):
    limit: int
    active: int


class GenerationFailedBody(ErrorBody):
    success: Literal[False]
    generationId: str
    creditsUsed: int
    remainingCredits: int


class SyncSuccess(BaseModel):
    success: Literal[True]
    generationId: str
    imageUrls: list[str]
    creditsUsed: int
    remainingCredits: int


class SyncWarning(BaseModel):
    success: Literal[False]
    warning: Literal[True]
    generationId: str
    message: str
    creditsUsed: int
    remainingCredits: int


class AsyncAccepted(BaseModel):
    success: Literal[True]
    async_: Literal[True] = Field(alias="async")
    generationId: str
    message: str
    creditsUsed: int
    remainingCredits: int


class StreamEventData(BaseModel):
    success: bool | None = Field(None, description="Always present on complete and error events")
    generationId: str | None = None
    imageUrls: list[str] | None = None
    error: str | None = None
    creditsUsed: int | None = None
    remainingCredits: int | None = None
    previewImage: str | None = Field(
        None,
        description="Extension, status events of streams only: a small picture of the work "
        "so far, as a data:image/… URL; none when the request set `previews` to false",
    )


class StreamEvent(BaseModel):
    """One SSE event: a line `data: {json}` then a blank line (preceded by an
    `id: N` line on the resume endpoint, or when the client sent
    `X-Stream-Event-Ids: true`)."""

    type: Literal["status", "complete", "error"]
    message: str
    progress: int = Field(ge=0, le=100)
    data: StreamEventData | None = None


class GenerationRecord(BaseModel):
    id: str
    prompt: str
    outputImageUrls: list[str]
    modelUsed: str
    processingStatus: Literal["processing", "completed", "failed"]
    creditsUsed: int
    createdAt: str = Field(description="ISO-8601 UTC with milliseconds and Z")
    errorMessage: str | None = Field(None, description="Present when failed")


class GenerationEnvelope(BaseModel):
    data: GenerationRecord


class GenerationList(BaseModel):
    data: list[GenerationRecord]
    nextBefore: str | None = Field(None, description="Pass as `before` for the next page")


class ModelInfo(BaseModel):
    name: str
    displayName: str
    creditsCost: int
    supportsImageInput: bool
    supportsAspectRatio: bool
    requiresPro: bool
    backend: str


class ModelList(BaseModel):
    data: list[ModelInfo]


class CreditsData(BaseModel):
    credits: int


class CreditsBody(BaseModel):
    data: CreditsData


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the contract's error statuses."""
    described = {
        400: "Invalid parameters",
        401: "Invalid or missing API key",
        402: "Insufficient credits",
        403: "API access not enabled, or the model needs a Pro account",
        404: "Not found",
        410: "Expired",
        413: "Request body too large",
        429: "Account concurrency limit exceeded",
        502: "The generation failed; its credits were refunded",
        503: "Server busy (async mode only)",
    }
    models: dict[int, type[BaseModel]] = {429: ConcurrencyErrorBody, 502: GenerationFailedBody}
    return {
        status: {"model": models.get(status, ErrorBody), "description": described[status]}
        for status in statuses
    }
