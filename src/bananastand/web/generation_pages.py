"""The account's generations: history, detail and cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from bananastand.api.deps import ServicesDep
from bananastand.errors import NotFound
from bananastand.views import image_urls, processing_status
from bananastand.web.deps import (
    PREFIX,
    CsrfForm,
    SignedInDep,
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
