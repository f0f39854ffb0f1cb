"""The contract's JSON shapes, built from records. Used by the API routers and
by the executor (stream events), so each shape is written once."""

from __future__ import annotations

from typing import Any

from bananastand.generations import GenerationRecord, format_time
from bananastand.storage import UrlSigner


def image_urls(record: GenerationRecord, signer: UrlSigner) -> list[str]:
    return [signer.url(i.id, i.extension, i.expires_at) for i in record.images]


def processing_status(record: GenerationRecord) -> str:
    return "processing" if record.state in ("queued", "running") else record.state


def record_view(record: GenerationRecord, signer: UrlSigner) -> dict[str, Any]:
    """`GET /api/v1/generate?id=` → `data`."""
    data: dict[str, Any] = {
        "id": record.id,
        "prompt": record.prompt,
        "outputImageUrls": image_urls(record, signer),
        "modelUsed": record.model,
        "processingStatus": processing_status(record),
        "creditsUsed": record.credits_used,
        "createdAt": format_time(record.created_at),
        "mode": record.mode,
        "quantity": record.quantity,
        "aspectRatio": record.aspect_ratio,
        "referenceImageCount": len(record.reference_urls),
    }
    if record.state == "failed" or record.error_message:
        data["errorMessage"] = record.error_message or "Generation failed"
    if record.warning_message:
        data["warning"] = True
        data["message"] = record.warning_message
    if record.finished_at is not None:
        data["completedAt"] = format_time(record.finished_at)
    if record.images:
        data["expiresAt"] = format_time(min(i.expires_at for i in record.images))
    return data


def sync_result(record: GenerationRecord, balance: int, signer: UrlSigner) -> dict[str, Any]:
    """The sync answer for a settled generation that did not fail outright."""
    if record.warning_message:
        return {
            "success": False,
            "warning": True,
            "generationId": record.id,
            "message": record.warning_message,
            "creditsUsed": record.credits_used,
            "remainingCredits": balance,
        }
    return {
        "success": True,
        "generationId": record.id,
        "imageUrls": image_urls(record, signer),
        "creditsUsed": record.credits_used,
        "remainingCredits": balance,
    }


def final_event(record: GenerationRecord, balance: int, signer: UrlSigner) -> dict[str, Any]:
    """The stream's last event: `complete` (success or safety warning) or `error`."""
    data: dict[str, Any] = {
        "success": record.state == "completed" and not record.warning_message,
        "generationId": record.id,
        "imageUrls": image_urls(record, signer),
        "creditsUsed": record.credits_used,
        "remainingCredits": balance,
    }
    if record.state == "failed":
        data["error"] = record.error_message or "Generation failed"
        return {"type": "error", "message": data["error"], "progress": 100, "data": data}
    if record.warning_message:
        data["warning"] = True
        return {
            "type": "complete",
            "message": record.warning_message,
            "progress": 100,
            "data": data,
        }
    return {"type": "complete", "message": "Generation complete", "progress": 100, "data": data}
