"""Sign up, sign in, sign out, the dashboard and Settings (API Keys, Account,
Webhooks)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import exists, select
from starlette.responses import Response

from bananastand.accounts import CreatedKey, hash_key
from bananastand.api.deps import ServicesDep
from bananastand.db.models import Account, ApiKey, Generation
from bananastand.errors import BananastandError, InvalidRequest
from bananastand.usage import PERIODS, Usage, period_start
from bananastand.web.deps import (
    FORM_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    CsrfForm,
    SignedInDep,
    SignedOutForm,
    redirect,
    render,
    render_signed_out,
    safe_next,
    set_cookie,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)

KEYS_PATH = f"{PREFIX}/settings/keys"
NEW_KEY_COOKIE = "bananastand_new_key"
KEY_STATS_DAYS = PERIODS[-1]  # each key's spend and images, over the Usage page's longest period

NOTICES = {
    "signed-out": "You are signed out.",
    "revoked": "The key is revoked. Requests with it now get 401.",
    "welcome": "Your account is ready.",
}


def _field(form: object, name: str) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value if isinstance(value, str) else ""


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/signin")
async def signin_page(request: Request, services: ServicesDep) -> Response:
    signed = await services.console_auth.resolve(request.cookies.get(SESSION_COOKIE))
    if signed is not None:
        return redirect(safe_next(request.query_params.get("next")))
    return render_signed_out(
        request,
        "signin.html",
        next=safe_next(request.query_params.get("next")),
        notice=NOTICES.get(request.query_params.get("done", "")),
    )


@router.post("/signin")
async def signin(request: Request, services: ServicesDep, form: SignedOutForm) -> Response:
    email, target = _field(form, "email"), safe_next(_field(form, "next"))
    try:
        token, _signed = await services.console_auth.sign_in(
            email=email, password=_field(form, "password"), ip=_client_ip(request)
        )
    except BananastandError as exc:
        return render_signed_out(
            request,
            "signin.html",
            status_code=exc.status,
            headers=exc.headers,
            error=exc.message,
            email=email,
            next=target,
        )
    response = redirect(target)
    _start_session(response, request, token, services.settings.console_session_hours)
    return response


def _start_session(response: Response, request: Request, token: str, hours: float) -> None:
    set_cookie(response, request, SESSION_COOKIE, token, max_age=int(hours * 3600))
    response.delete_cookie(FORM_COOKIE, path=PREFIX)


@router.get("/signup")
async def signup_page(request: Request, services: ServicesDep) -> Response:
    return render_signed_out(
        request,
        "signup.html",
        closed=not services.settings.console_signup,
        needs_admin=await services.console_auth.needs_admin(),
        status_code=200 if services.settings.console_signup else 403,
    )


@router.post("/signup")
async def signup(request: Request, services: ServicesDep, form: SignedOutForm) -> Response:
    email, name = _field(form, "email"), _field(form, "name")
    password = _field(form, "password")
    try:
        if password != _field(form, "confirm"):
            raise InvalidRequest("The two passwords differ")
        account = await services.console_auth.sign_up(
            email=email,
            password=password,
            display_name=name,
            ip=_client_ip(request),
            setup_code=_field(form, "setup_code"),
        )
        # Signed in at once: no second password check (each is a 64 MiB Argon2 run).
        token, _signed = await services.console_auth.open_session(account)
    except BananastandError as exc:
        return render_signed_out(
            request,
            "signup.html",
            status_code=exc.status,
            headers=exc.headers,
            error=exc.message,
            email=email,
            name=name,
            closed=not services.settings.console_signup,
            needs_admin=await services.console_auth.needs_admin(),
        )
    response = redirect(f"{PREFIX}?done=welcome")
    _start_session(response, request, token, services.settings.console_session_hours)
    return response


@router.post("/signout")
async def signout(services: ServicesDep, signed: SignedInDep, _form: CsrfForm) -> Response:
    await services.console_auth.sign_out(signed.session_id)
    response = redirect(f"{PREFIX}/signin?done=signed-out")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("")
async def dashboard(request: Request, services: ServicesDep, signed: SignedInDep) -> Response:
    account = signed.account
    settings = services.settings
    recharged = await services.billing.recharged_total(account.id)
    return render(
        request,
        "dashboard.html",
        balance=await services.billing.balance(account.id),
        activity=(await Usage(services.db).ledger_page(account.id, limit=5)).entries,
        recharged=recharged,
        threshold=services.billing.threshold,
        still_needed=max(services.billing.threshold - recharged, 0),
        currency=services.billing.currency,
        limit=account.concurrency_limit or settings.default_concurrency_limit,
        default_limit=account.concurrency_limit is None,
        keys=len(await services.accounts.list_keys(account.id)),
        notice=NOTICES.get(request.query_params.get("done", "")),
        **await _get_started(services, account),
    )


async def _get_started(services: ServicesDep, account: Account) -> dict[str, Any]:
    """The dashboard's "Get started" box: shown until the account's first generation
    (one indexed EXISTS, not a count of its history)."""
    generated = await services.db.read(
        lambda tx: tx.session.scalar(select(exists().where(Generation.account_id == account.id)))
    )
    return {"get_started": not generated, "base_url": services.settings.base_url}


# --- Settings → API Keys ---------------------------------------------------------------
def _listing_order(key: ApiKey) -> tuple[bool, float]:
    """Live keys first (as created, oldest first), then revoked ones, latest revoked first."""
    revoked = key.revoked_at
    return (revoked is not None, -revoked.timestamp() if revoked else 0.0)


async def _keys_page(
    request: Request,
    services: ServicesDep,
    signed: SignedInDep,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    account_id = signed.account.id
    keys = await services.accounts.list_keys(account_id, include_revoked=True)
    live = sum(1 for key in keys if key.revoked_at is None)
    return render(
        request,
        "keys.html",
        status_code=status_code,
        keys=sorted(keys, key=_listing_order),
        stats=await Usage(services.db).key_stats(account_id, since=period_start(KEY_STATS_DAYS)),
        stats_days=KEY_STATS_DAYS,
        live=live,
        max_keys=services.accounts.max_keys,
        full=live >= services.accounts.max_keys,
        api_base=services.settings.base_url,
        **{"notice": NOTICES.get(request.query_params.get("done", "")), **context},
    )


@router.get("/settings/keys")
async def keys_page(request: Request, services: ServicesDep, signed: SignedInDep) -> Response:
    created_id = request.query_params.get("created")
    if not created_id:
        return await _keys_page(request, services, signed)
    # Just created: the key travels once, in a short-lived cookie only this page
    # reads (the server keeps its hash only), and is forgotten as it is shown.
    secret = request.cookies.get(NEW_KEY_COOKIE, "")
    key = next(
        (k for k in await services.accounts.list_keys(signed.account.id) if k.id == created_id),
        None,
    )
    if key is not None and secret and hmac.compare_digest(hash_key(secret), key.secret_hash):
        response = await _keys_page(
            request, services, signed, created=CreatedKey(key=key, secret=secret)
        )
    else:
        response = await _keys_page(
            request,
            services,
            signed,
            notice="That key was shown once already. If you did not copy it, revoke it "
            "and create another.",
        )
    response.delete_cookie(NEW_KEY_COOKIE, path=KEYS_PATH)
    return response


@router.post("/settings/keys")
async def create_key(
    request: Request, services: ServicesDep, signed: SignedInDep, form: CsrfForm
) -> Response:
    try:
        created = await services.accounts.create_key(
            signed.account.id, name=_field(form, "name") or "unnamed"
        )
    except BananastandError as exc:
        return await _keys_page(
            request, services, signed, status_code=exc.status, error=exc.message
        )
    # Post/redirect/get: a reload can neither make a second key nor show this one again.
    response = redirect(f"{KEYS_PATH}?created={created.key.id}")
    set_cookie(
        response,
        request,
        NEW_KEY_COOKIE,
        created.secret,
        path=KEYS_PATH,
        max_age=120,
        samesite="strict",
    )
    return response


@router.post("/settings/keys/{key_id}/revoke")
async def revoke_key(
    key_id: str, services: ServicesDep, signed: SignedInDep, _form: CsrfForm
) -> Response:
    # Scoped to the signed-in account: another account's key id is simply not found.
    await services.accounts.revoke_key(key_id, account_id=signed.account.id)
    return redirect(f"{PREFIX}/settings/keys?done=revoked")


# --- Settings → Account -------------------------------------------------------------
@router.get("/settings/account")
async def account_page(request: Request, signed: SignedInDep) -> Response:
    done = request.query_params.get("done") == "password"
    return render(request, "account.html", notice="Your password is changed." if done else None)


@router.post("/settings/account/password")
async def change_password(
    request: Request, services: ServicesDep, signed: SignedInDep, form: CsrfForm
) -> Response:
    try:
        if _field(form, "new") != _field(form, "confirm"):
            raise InvalidRequest("The two new passwords differ")
        token, _fresh = await services.console_auth.change_password(
            signed,
            current=_field(form, "current"),
            new=_field(form, "new"),
            ip=_client_ip(request),
        )
    except BananastandError as exc:
        return render(
            request,
            "account.html",
            status_code=exc.status,
            headers=exc.headers,
            error=exc.message,
        )
    # Every other browser is signed out; this one continues on a new session.
    response = redirect(f"{PREFIX}/settings/account?done=password")
    _start_session(response, request, token, services.settings.console_session_hours)
    return response


# --- Settings → Webhooks -------------------------------------------------------------
@router.get("/settings/webhooks")
async def webhooks_page(request: Request, services: ServicesDep, signed: SignedInDep) -> Response:
    return render(
        request,
        "webhooks.html",
        secret=await services.webhooks.secret(signed.account.id),
        deliveries=await services.webhooks.deliveries(signed.account.id),
        notice="A new secret is in place: update your receivers."
        if request.query_params.get("done") == "rotated"
        else None,
    )


@router.post("/settings/webhooks/rotate")
async def rotate_webhook_secret(
    services: ServicesDep, signed: SignedInDep, _form: CsrfForm
) -> Response:
    await services.webhooks.secret(signed.account.id, rotate=True)
    return redirect(f"{PREFIX}/settings/webhooks?done=rotated")
