"""The account's generations: history (filtered, keyset-paged), detail, the
detail's JSON for pages that refresh themselves, and cancel."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from bananastand import thumbnails
from bananastand.api.deps import ServicesDep
from bananastand.container import Services
from bananastand.contract_json import record_view
from bananastand.db.models import utcnow
from bananastand.errors import NotFound
from bananastand.generations import STATUSES, GenerationRecord, HistoryFilter, history_status
from bananastand.storage import UrlSigner, image_key
from bananastand.web.deps import (
    PREFIX,
    CsrfForm,
    SignedInDep,
    redirect,
    render,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PAGE_SIZE = 20
FILTER_NAMES = ("status", "model", "from", "to")


class BadFilter(ValueError):
    """A history filter the page cannot use; its message is shown as it is."""


@dataclass(frozen=True)
class Filters:
    """The history page's filters as asked (`query`: to carry them across pages)."""

    wanted: HistoryFilter
    values: dict[str, str]

    def link(self, **extra: str) -> str:
        query = urlencode({**{k: v for k, v in self.values.items() if v}, **extra})
        return f"{PREFIX}/generations" + (f"?{query}" if query else "")


def _model_names(services: Services) -> list[tuple[str, str]]:
    """(name, label) of the models one can filter by: the catalogue's, and those
    it names as unavailable here (their past generations are still listed)."""
    catalog = services.catalog
    names = [(model.name, model.display_name) for model in catalog]
    return names + [
        (name, f"{name} (not offered here)")
        for name in catalog.unavailable
        if name not in dict(names)
    ]


def _day(value: str, what: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"The {what} date must be a date like 2025-01-31.") from None


def parse_filters(params: Any, models: list[tuple[str, str]]) -> Filters:
    """The filters of a history request; `BadFilter` names what is wrong."""
    values = {name: str(params.get(name) or "").strip() for name in FILTER_NAMES}
    status, model = values["status"] or None, values["model"] or None
    if status is not None and status not in STATUSES:
        raise BadFilter(f"The status must be one of: {', '.join(STATUSES)}.")
    if model is not None and model not in dict(models):
        raise BadFilter(f"There is no model named “{model[:60]}”.")
    since, until = _day(values["from"], "from"), _day(values["to"], "to")
    if since and until and since > until:
        raise BadFilter("The from date is after the to date.")
    return Filters(
        HistoryFilter(
            status=status,
            model=model,
            since=datetime.combine(since, time(), UTC) if since else None,
            # Through the whole of the last day asked for.
            until=datetime.combine(until + timedelta(days=1), time(), UTC) if until else None,
        ),
        values,
    )


@router.get("/generations")
async def history(request: Request, services: ServicesDep, signed: SignedInDep) -> Response:
    models = _model_names(services)
    before = request.query_params.get("before") or None
    try:
        filters = parse_filters(request.query_params, models)
    except BadFilter as exc:
        values = {name: request.query_params.get(name, "") for name in FILTER_NAMES}
        return render(
            request,
            "generations.html",
            status_code=400,
            error=str(exc),
            rows=[],
            filters=Filters(HistoryFilter(), values),
            models=models,
            statuses=STATUSES,
            next_link=None,
            first_page=True,
        )
    try:
        rows = await services.generation.generations.page(
            signed.account.id, limit=PAGE_SIZE + 1, before=before, filters=filters.wanted
        )
    except NotFound:  # a stale or mangled "Older" link: start from the newest
        return redirect(filters.link())
    signer = services.generation.signer
    shown = [_row(record, signer) for record in rows[:PAGE_SIZE]]
    # The listed thumbnails are made before the page is, not by the browser's
    # requests for them (which a quick click elsewhere would cut short).
    await services.thumbnails.prepare(
        (image["id"], image["key"]) for row in shown for image in row["images"][:1]
    )
    return render(
        request,
        "generations.html",
        rows=shown,
        filters=filters,
        models=models,
        statuses=STATUSES,
        next_link=filters.link(before=rows[PAGE_SIZE - 1].id) if len(rows) > PAGE_SIZE else None,
        first_page=before is None,
    )


def _row(record: GenerationRecord, signer: UrlSigner) -> dict[str, Any]:
    now = utcnow()
    live = [i for i in record.images if i.deleted_at is None and i.expires_at > now]
    images = [
        {
            "id": image.id,
            "key": image_key(image.id, image.extension),
            "url": (url := signer.url(image.id, image.extension, image.expires_at)),
            "thumb": f"{url}?size={thumbnails.SIZE_PARAM}",
            "width": image.width,
            "height": image.height,
            "thumb_size": thumbnails.size(image.width, image.height),
        }
        for image in live
    ]
    return {
        "record": record,
        "status": history_status(record),
        "images": images,
        "refunded": record.credits_charged - record.credits_used,
        "expires_at": min((image.expires_at for image in live), default=None),
        "json_url": f"{PREFIX}/generations/{record.id}.json",
    }


def _references(record: GenerationRecord) -> list[dict[str, str]]:
    """The generation's reference images as the record keeps them: http(s) URLs
    as links; data URLs (kept only as their header) summarised."""
    found = []
    for url in record.reference_urls:
        if url.startswith(("http://", "https://")):
            found.append({"href": url, "label": url})
        else:
            kind = url.removeprefix("data:").split(";", 1)[0].split(",", 1)[0] or "data"
            found.append({"href": "", "label": f"An uploaded image ({kind}), not kept"})
    return found


# Before `/generations/{generation_id}`, which would take "….json" as an id.
@router.get("/generations/{generation_id}.json")
async def detail_json(generation_id: str, services: ServicesDep, signed: SignedInDep) -> Response:
    """What `GET /api/v1/generate?id=` answers for it: the detail page polls this
    while the generation runs."""
    record = await services.generation.generations.get(generation_id, account_id=signed.account.id)
    return JSONResponse({"data": record_view(record, services.generation.signer)})


@router.get("/generations/{generation_id}")
async def detail(
    generation_id: str, request: Request, services: ServicesDep, signed: SignedInDep
) -> Response:
    # Scoped to the account: another account's generation is "not found".
    record = await services.generation.generations.get(generation_id, account_id=signed.account.id)
    signer = services.generation.signer
    answer = {"data": record_view(record, signer)}
    return render(
        request,
        "generation.html",
        row=_row(record, signer),
        references=_references(record),
        answer=json.dumps(answer, indent=2, ensure_ascii=False),
        cancelled=request.query_params.get("done") == "cancelled",
    )


@router.post("/generations/{generation_id}/cancel")
async def cancel(
    generation_id: str, services: ServicesDep, signed: SignedInDep, _form: CsrfForm
) -> Response:
    await services.generation.cancel(generation_id, account_id=signed.account.id)
    return redirect(f"{PREFIX}/generations/{generation_id}?done=cancelled")
