"""Admin pages: accounts, their credits, flags, limits, ledger and generations,
and the audit log. Every state-changing action goes through `Administration`,
which writes the audit log.

Every POST ends in a 303 (post/redirect/get), so a reload never sends a form
again: to the page with a notice after a success; after an error, to the page
with the message and what was typed, carried once in a short-lived cookie
signed with the session's own secret (its CSRF token), so no other session and
no other site can plant one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from bananastand.accounts import ACCOUNT_SORTS
from bananastand.admin import ACTIONS
from bananastand.api.deps import ServicesDep
from bananastand.console_auth import SignedIn
from bananastand.errors import BananastandError, InvalidRequest
from bananastand.web.deps import PREFIX, AdminDep, CsrfForm, redirect, render, set_cookie

router = APIRouter(prefix=f"{PREFIX}/admin", include_in_schema=False)

NOTICES = {
    "recharged": "Recharge recorded.",
    "credits": "Credits changed.",
    "flags": "Account updated.",
}
# The fields each form posts: what comes back after an error.
FORMS = {
    "recharge": ("money", "credits", "note"),
    "credits": ("direction", "credits", "reason"),
    "flags": ("api_access", "is_pro", "concurrency_limit"),
}
FLASH_COOKIE = "bananastand_flash"
FLASH_SECONDS = 60
_FIELD_CHARS = 500  # the longest field the forms take


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


# --- the flash: an error and the typed values, once ------------------------------------
@dataclass(frozen=True)
class Flash:
    form: str = ""
    error: str = ""
    values: dict[str, str] = field(default_factory=dict)


def _sign(signed: SignedIn, payload: bytes) -> str:
    return hmac.new(signed.csrf_token.encode(), payload, hashlib.sha256).hexdigest()


def _pack(signed: SignedIn, account_id: str, flash: Flash) -> str:
    data = {"account": account_id, "form": flash.form, "error": flash.error}
    payload = json.dumps({**data, "values": flash.values}, separators=(",", ":")).encode()
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return encoded + "." + _sign(signed, payload)


def _unpack(signed: SignedIn, account_id: str, cookie: str | None) -> Flash | None:
    if not cookie or len(cookie) > 8192:
        return None
    encoded, _, signature = cookie.partition(".")
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(signature, _sign(signed, payload)):
        return None
    data = json.loads(payload)
    if data.get("account") != account_id or data.get("form") not in FORMS:
        return None
    values = {
        k: str(v) for k, v in dict(data.get("values") or {}).items() if k in FORMS[data["form"]]
    }
    return Flash(form=data["form"], error=str(data.get("error", "")), values=values)


# --- accounts ---------------------------------------------------------------------------
@router.get("/accounts")
async def accounts(request: Request, services: ServicesDep, signed: AdminDep) -> Response:
    search = request.query_params.get("q", "").strip()[:320]
    sort = request.query_params.get("sort", "created")
    if sort not in ACCOUNT_SORTS:
        sort = "created"
    after = request.query_params.get("after", "")[:64]
    page = await services.accounts.page(
        search=search, sort=sort, after=after, limit=services.settings.console_admin_page_size
    )

    def link(**extra: str) -> str:
        query = {"q": search, "sort": sort, **extra}
        return "/console/admin/accounts?" + urlencode({k: v for k, v in query.items() if v})

    return render(
        request,
        "admin_accounts.html",
        rows=page.rows,
        search=search,
        sort=sort,
        sorts={"created": "Newest first", "email": "Email", "balance": "Largest balance"},
        first_page=link() if after else None,
        next_page=link(after=page.next_after) if page.next_after else None,
    )


async def _account_page(
    request: Request,
    services: ServicesDep,
    account_id: str,
    *,
    flash: Flash | None = None,
) -> Response:
    target = await services.accounts.get(account_id)
    flash = flash or Flash()
    return render(
        request,
        "admin_account.html",
        target=target,
        balance=target.balance,
        ledger=await services.billing.ledger(target.id, limit=50),
        recharges=await services.billing.recharges(target.id),
        generations=await services.generation.generations.page(target.id, limit=20),
        audit=(await services.admin.audit_page(account=target.id, limit=20)).rows,
        keys=await services.accounts.list_keys(target.id, include_revoked=True),
        payments=await services.payments.for_account(target.id),
        actions=ACTIONS,
        currency=services.billing.currency,
        default_limit=services.settings.default_concurrency_limit,
        error=flash.error or None,
        failed=flash.form,
        kept=flash.values,
        notice=NOTICES.get(request.query_params.get("done", "")),
    )


def _account_path(account_id: str) -> str:
    return f"{PREFIX}/admin/accounts/{account_id}"


@router.get("/accounts/{account_id}")
async def account(
    account_id: str, request: Request, services: ServicesDep, signed: AdminDep
) -> Response:
    target = await services.accounts.get(account_id)
    flash = _unpack(signed, target.id, request.cookies.get(FLASH_COOKIE))
    response = await _account_page(request, services, target.id, flash=flash)
    if FLASH_COOKIE in request.cookies:  # shown once
        response.delete_cookie(FLASH_COOKIE, path=_account_path(target.id))
    return response


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
        # Back to the page (a reload does not post again), with the message and
        # the values as typed: a failed deduct stays a deduct.
        values = {name: _text(form, name)[:_FIELD_CHARS] for name in FORMS.get(action, ())}
        flash = Flash(form=action if action in FORMS else "", error=exc.message, values=values)
        response = redirect(_account_path(target.id))
        set_cookie(
            response,
            request,
            FLASH_COOKIE,
            _pack(signed, target.id, flash),
            path=_account_path(target.id),
            max_age=FLASH_SECONDS,
            samesite="strict",
        )
        return response
    return redirect(f"{_account_path(target.id)}?done={done}")


# --- the audit log ----------------------------------------------------------------------
@router.get("/audit")
async def audit(request: Request, services: ServicesDep, signed: AdminDep) -> Response:
    params = request.query_params
    account = params.get("account", "").strip()[:320]
    action = params.get("action", "")
    if action not in ACTIONS:
        action = ""
    before_text = params.get("before", "")
    before = int(before_text) if before_text.isascii() and before_text.isdigit() else None
    page = await services.admin.audit_page(
        account=account,
        action=action,
        before=before if before is not None and before < 2**62 else None,
        limit=services.settings.console_admin_page_size,
    )

    def link(**extra: Any) -> str:
        query = {"account": account, "action": action, **extra}
        return "/console/admin/audit?" + urlencode({k: v for k, v in query.items() if v})

    return render(
        request,
        "admin_audit.html",
        audit=page.rows,
        account_filter=account,
        action=action,
        actions=ACTIONS,
        first_page=link() if before is not None else None,
        next_page=link(before=page.next_before) if page.next_before else None,
    )
