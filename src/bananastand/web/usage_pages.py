"""Usage: what the account spent and made (charts, per model, per key) and its
whole ledger, page by page or as CSV."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from bananastand.api.deps import ServicesDep
from bananastand.db.models import utcnow
from bananastand.usage import PERIODS, Usage
from bananastand.web.deps import PREFIX, SignedInDep, redirect, render
from bananastand.web.usage_chart import colours, stacked

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def usage_of(services: ServicesDep) -> Usage:
    return Usage(services.db)


UsageDep = Annotated[Usage, Depends(usage_of)]


def _days(value: str | None) -> int:
    """The period asked for, or the shortest when the link was mangled."""
    return int(value) if value in {str(days) for days in PERIODS} else PERIODS[0]


def _cursor(value: str | None) -> int | None:
    """A ledger page's `before=` cursor: a positive entry id, or None (bad or absent)."""
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value) or None


@router.get("/usage")
async def usage_page(
    request: Request, services: ServicesDep, signed: SignedInDep, usage: UsageDep
) -> Response:
    account_id = signed.account.id
    days = _days(request.query_params.get("days"))
    raw_before = request.query_params.get("before")
    before = _cursor(raw_before)
    if raw_before is not None and before is None:  # a mangled "Older" link: the newest
        return redirect(f"{PREFIX}/usage?days={days}#ledger")
    series = await usage.series(account_id, days=days)
    keys = {
        key.id: key for key in await services.accounts.list_keys(account_id, include_revoked=True)
    }
    return render(
        request,
        "usage.html",
        days=days,
        periods=PERIODS,
        series=series,
        fills=colours(series.models),
        charts=[stacked(series, "credits"), stacked(series, "images")],
        keys=keys,
        page=await usage.ledger_page(account_id, before=before),
        first_page=before is None,
        balance=await services.billing.balance(account_id),
    )


@router.get("/usage/ledger.csv")
async def ledger_csv(signed: SignedInDep, usage: UsageDep) -> Response:
    name = f"bananastand-ledger-{utcnow():%Y-%m-%d}.csv"
    return StreamingResponse(
        usage.ledger_csv(signed.account.id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
