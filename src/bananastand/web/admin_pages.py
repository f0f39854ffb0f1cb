"""Admin pages: accounts, their credits, flags, limits, ledger and generations,
and the audit log. Every state-changing action goes through `Administration`,
which writes the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from bananastand.api.deps import ServicesDep
from bananastand.errors import BananastandError, InvalidRequest
from bananastand.web.deps import PREFIX, AdminDep, CsrfForm, redirect, render

router = APIRouter(prefix=f"{PREFIX}/admin", include_in_schema=False)

NOTICES = {
    "recharged": "Recharge recorded.",
    "credits": "Credits changed.",
    "flags": "Account updated.",
}


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _integer(form: FormData, name: str, label: str) -> int:
    text = _text(form, name)
    try:
        if len(text) > 20:  # far past any bound, and `int()` is slow on huge input
            raise ValueError(text)
        return int(text)
    except ValueError:
        raise InvalidRequest(f"{label} must be a whole number") from None


@router.get("/accounts")
async def accounts(request: Request, services: ServicesDep, signed: AdminDep) -> Response:
    search = request.query_params.get("q", "").strip()
    rows = await services.accounts.list(search=search, limit=200)
    balances = {row.id: await services.billing.balance(row.id) for row in rows}
    return render(request, "admin_accounts.html", rows=rows, balances=balances, search=search)


async def _account_page(
    request: Request,
    services: ServicesDep,
    account_id: str,
    *,
    status_code: int = 200,
    error: str | None = None,
) -> Response:
    target = await services.accounts.get(account_id)
    return render(
        request,
        "admin_account.html",
        status_code=status_code,
        target=target,
        balance=await services.billing.balance(target.id),
        ledger=await services.billing.ledger(target.id, limit=50),
        recharges=await services.billing.recharges(target.id),
        generations=await services.generation.generations.page(target.id, limit=20),
        audit=await services.admin.audit_log(account_id=target.id, limit=20),
        keys=await services.accounts.list_keys(target.id, include_revoked=True),
        payments=await services.payments.for_account(target.id),
        currency=services.billing.currency,
        default_limit=services.settings.default_concurrency_limit,
        error=error,
        notice=NOTICES.get(request.query_params.get("done", "")),
    )


@router.get("/accounts/{account_id}")
async def account(
    account_id: str, request: Request, services: ServicesDep, signed: AdminDep
) -> Response:
    return await _account_page(request, services, account_id)


@router.post("/accounts/{account_id}/{action}")
async def act(
    account_id: str,
    action: str,
    request: Request,
    services: ServicesDep,
    signed: AdminDep,
    form: CsrfForm,
) -> Response:
    actor = signed.account.email
    admin = services.admin
    target = await services.accounts.get(account_id)
    try:
        if action == "recharge":
            await admin.recharge(
                actor,
                target.id,
                money=_text(form, "money"),
                credits=_integer(form, "credits", "Credits"),
                note=_text(form, "note"),
            )
            done = "recharged"
        elif action == "credits":
            credits = _integer(form, "credits", "Credits")
            direction = _text(form, "direction")
            if direction not in ("grant", "deduct"):
                raise InvalidRequest("Choose to grant or to deduct")
            if credits <= 0:
                raise InvalidRequest(f"Credits to {direction} must be a positive number")
            if direction == "deduct":
                credits = -credits
            await admin.adjust(actor, target.id, credits=credits, reason=_text(form, "reason"))
            done = "credits"
        elif action == "flags":
            # Only what changed is applied (and logged).
            access, pro = form.get("api_access") == "on", form.get("is_pro") == "on"
            limit = (
                _integer(form, "concurrency_limit", "The limit")
                if _text(form, "concurrency_limit")
                else None
            )
            await admin.update(
                actor,
                target.id,
                api_access=access if access != target.api_access else None,
                is_pro=pro if pro != target.is_pro else None,
                concurrency_limit=limit if limit != target.concurrency_limit else None,
                reset_concurrency_limit=limit is None and target.concurrency_limit is not None,
            )
            done = "flags"
        else:
            raise InvalidRequest(f"Unknown action {action!r}")
    except BananastandError as exc:
        return await _account_page(
            request, services, target.id, status_code=exc.status, error=exc.message
        )
    return redirect(f"{PREFIX}/admin/accounts/{target.id}?done={done}")


@router.get("/audit")
async def audit(request: Request, services: ServicesDep, signed: AdminDep) -> Response:
    return render(request, "admin_audit.html", entries=await services.admin.audit_log(limit=500))
