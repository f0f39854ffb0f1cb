"""What every console page shares: the signed-in account, CSRF checks, cookies,
security headers and rendering.

Cookies live under `/console` only, so a browser never sends them to the API;
the API reads only bearer keys, so a console session never works there.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from bananastand.api.deps import ServicesDep
from bananastand.console_auth import SignedIn
from bananastand.db.models import utcnow
from bananastand.errors import BananastandError, Forbidden, Unauthorized

log = logging.getLogger(__name__)

PREFIX = "/console"
SESSION_COOKIE = "bananastand_session"
FORM_COOKIE = "bananastand_form"  # double-submit CSRF token for signed-out forms
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

# Sent with every console response (see `web.ConsoleHeaders`).
CONSOLE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob: https: http:; script-src 'self'; "
        b"style-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        b"base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _time_left(expires_at: datetime) -> str:
    seconds = int((expires_at - utcnow()).total_seconds())
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {rest // 60} min" if hours else f"{max(1, rest // 60)} min"


templates.env.filters["time_left"] = _time_left


def _when(value: datetime) -> Markup:
    """A moment as `<time>`: UTC in the text (what a page without scripts shows) and
    in `datetime`, which `console.js` turns into the viewer's local and relative time."""
    moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"), moment.strftime("%Y-%m-%d %H:%M UTC")
    )


templates.env.filters["when"] = _when
templates.env.filters["thousands"] = lambda value: f"{value:,}"
templates.env.filters["money"] = lambda value: f"{value:,.2f}".removesuffix(".00")
templates.env.filters["plural"] = lambda count, word: f"{count:,} {word}{'' if count == 1 else 's'}"


def _duration(seconds: float) -> str:
    """1 day, 36 hours, 20 min, 45 s: the largest unit that reads naturally."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if (seconds >= size and seconds % size == 0) or seconds >= 2 * size:
            count = round(seconds / size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{round(seconds)} s"


templates.env.filters["duration"] = _duration


class SignInRequired(Unauthorized):
    default_message = "Sign in to continue"


def secure_cookies(request: Request) -> bool:
    """`auto`: when this request came over HTTPS or the server's public address is
    https (a TLS proxy in front that does not say so still gets Secure cookies)."""
    settings = request.app.state.services.settings
    mode = settings.console_secure_cookies
    if mode != "auto":
        return bool(mode == "always")
    return request.url.scheme == "https" or settings.base_url.startswith("https://")


def set_cookie(response: Response, request: Request, name: str, value: str, **options: Any) -> None:
    options.setdefault("samesite", "lax")
    options.setdefault("path", PREFIX)
    response.set_cookie(name, value, httponly=True, secure=secure_cookies(request), **options)


async def signed_in(request: Request, services: ServicesDep) -> SignedIn:
    signed = await services.console_auth.resolve(request.cookies.get(SESSION_COOKIE))
    if signed is None:
        raise SignInRequired()
    request.state.signed = signed
    return signed


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


async def admin(signed: SignedInDep) -> SignedIn:
    if not signed.account.is_admin:
        raise Forbidden("This page is for administrators")
    return signed


AdminDep = Annotated[SignedIn, Depends(admin)]


def _check_origin(request: Request) -> None:
    """Browsers send Origin on POSTs; one naming another site is refused outright.
    This site is the Host asked for, the proxy's forwarded host, or the public URL."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return
    ours = {
        request.headers.get("host", request.url.netloc),
        request.headers.get("x-forwarded-host", ""),
        urlsplit(request.app.state.services.settings.base_url).netloc,
    }
    if urlsplit(origin).netloc not in ours:
        raise Forbidden("Cross-site form submission refused")


async def csrf_form(request: Request, signed: SignedInDep) -> FormData:
    """The posted form of a signed-in page, after its CSRF token checked out."""
    _check_origin(request)
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent, signed.csrf_token):
        raise Forbidden("This form has expired; reload the page and try again")
    return form


CsrfForm = Annotated[FormData, Depends(csrf_form)]


async def signed_out_form(request: Request) -> FormData:
    """The posted form of a sign-in or sign-up page (double-submit cookie)."""
    _check_origin(request)
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    cookie = request.cookies.get(FORM_COOKIE, "")
    if not isinstance(sent, str) or not cookie or not hmac.compare_digest(sent, cookie):
        raise Forbidden("This form has expired; reload the page and try again")
    return form


SignedOutForm = Annotated[FormData, Depends(signed_out_form)]


def check_csrf_header(request: Request, signed: SignedIn) -> None:
    """For the console's own script calls (the playground)."""
    _check_origin(request)
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent, signed.csrf_token):
        raise Forbidden("Missing or stale CSRF token; reload the page")


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    signed: SignedIn | None = getattr(request.state, "signed", None)
    context.setdefault("account", signed.account if signed else None)
    context.setdefault("csrf", signed.csrf_token if signed else "")
    context.setdefault("settings", request.app.state.services.settings)
    return templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=headers
    )


def render_signed_out(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    """A sign-in or sign-up page, with a fresh double-submit token when it has none."""
    token = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request, template, status_code=status_code, headers=headers, csrf=token, **context
    )
    set_cookie(response, request, FORM_COOKIE, token, samesite="strict")
    return response


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def safe_next(value: object) -> str:
    """Only paths inside the console: never an open redirect."""
    if (
        isinstance(value, str)
        and (value == PREFIX or value.startswith(PREFIX + "/") or value.startswith(PREFIX + "?"))
        and "//" not in value
        and "\\" not in value
    ):
        return value
    return PREFIX


async def error_page(request: Request, exc: BananastandError) -> Response | None:
    """The console's face for errors (wired into the API's one error boundary)."""
    path: str = request.scope["path"]  # (not `request.url`: built anew for every API error)
    if not (path == PREFIX or path.startswith(PREFIX + "/")) or path.endswith("/generate"):
        return None
    if isinstance(exc, SignInRequired):
        target = path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = PREFIX
        return redirect(f"{PREFIX}/signin?next={quote(target)}")
    if exc.status < 500 and getattr(request.state, "signed", None) is None:
        # No page dependency ran (an unknown URL has no route): the page still shows
        # the navigation to whoever is signed in.
        try:
            services = request.app.state.services
            request.state.signed = await services.console_auth.resolve(
                request.cookies.get(SESSION_COOKIE)
            )
        except Exception:  # the error page is shown signed out rather than not at all
            log.warning("could not read the session for the error page of %s", path)
    try:
        page = render(request, "error.html", status_code=exc.status, message=exc.message, exc=exc)
        # Also when the error came from outside the app (a 500): the console's headers.
        page.headers.update(
            {name.decode(): value.decode() for name, value in CONSOLE_HEADERS}
            | {"cache-control": "no-store"}
        )
        page.headers.update(exc.headers)
        return page
    except Exception:  # a page that cannot render falls back to the JSON answer
        log.exception("could not render the error page for %s", path)
        return None
