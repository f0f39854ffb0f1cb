"""Recharge: the packages on sale, buying one through Stripe Checkout, the page a
payment comes back to, and the account's payments with their receipts.

Thin: `payments.Payments` does the work. The page a browser returns to from
Stripe only reads what the verified webhook recorded; it never credits."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from bananastand.api.deps import ServicesDep
from bananastand.db.models import Payment
from bananastand.errors import InvalidRequest, NotFound
from bananastand.payments import CREDITED, major_units
from bananastand.web.deps import PREFIX, CsrfForm, SignedInDep, redirect, render, templates

router = APIRouter(prefix=f"{PREFIX}/recharge", include_in_schema=False)

# 110000 CNY-minor -> "1,100"; 500 JPY -> "500"
templates.env.filters["minor_money"] = lambda amount, currency: (
    f"{major_units(amount, currency):,.2f}".removesuffix(".00")
)


def _require(services: ServicesDep) -> None:
    if not services.payments.enabled:
        raise NotFound("Recharging is not offered on this server")


@router.get("")
async def recharge_page(request: Request, services: ServicesDep, signed: SignedInDep) -> Response:
    _require(services)
    account = signed.account
    return render(
        request,
        "recharge.html",
        packages=services.payments.packages,
        payments=await services.payments.for_account(account.id),
        balance=await services.billing.balance(account.id),
        threshold=services.billing.threshold,
        currency=services.billing.currency,
    )


@router.post("")
async def buy(services: ServicesDep, signed: SignedInDep, form: CsrfForm) -> Response:
    _require(services)
    number = form.get("package")
    if not isinstance(number, str) or not number.isdigit():
        raise InvalidRequest("Choose one of the packages on sale")
    payment = await services.payments.start_checkout(signed.account, int(number))
    return redirect(f"{PREFIX}/recharge/payments/{payment.id}/checkout")


@router.get("/payments/{payment_id}/checkout")
async def checkout(
    payment_id: str, request: Request, services: ServicesDep, signed: SignedInDep
) -> Response:
    """On to Stripe's page (a form may only post to this site, so the page itself
    moves on, and offers the link)."""
    payment = await services.payments.get(payment_id, account_id=signed.account.id)
    if payment.status != "pending" or not payment.checkout_url:
        return redirect(f"{PREFIX}/recharge/payments/{payment.id}")
    return render(request, "recharge_checkout.html", payment=payment)


@router.get("/payments/{payment_id}")
async def payment_page(
    payment_id: str, request: Request, services: ServicesDep, signed: SignedInDep
) -> Response:
    """Where Stripe sends the browser back (success or cancel): what the verified
    events say so far."""
    payment = await services.payments.get(payment_id, account_id=signed.account.id)
    cancelled = request.query_params.get("cancelled") == "1"
    return render(
        request,
        "recharge_result.html",
        payment=payment,
        outcome=_outcome(payment, cancelled=cancelled),
        waiting=payment.status in ("pending", "processing") and not cancelled,
        balance=await services.billing.balance(signed.account.id),
    )


def _outcome(payment: Payment, *, cancelled: bool) -> tuple[str, str]:
    """(kind, sentence) of what became of the payment, for its page."""
    credits = f"{payment.credits:,}"
    if payment.status == "paid":
        return "notice", f"Payment received, {credits} credits added."
    if payment.status in CREDITED:
        taken = f"{payment.credits_clawed_back:,}"
        return "warning", f"Payment received, then {payment.status.replace('_', ' ')}: " + (
            f"{taken} of its {credits} credits taken back."
        )
    if payment.status == "pending" and cancelled:
        return "notice", "Cancelled, nothing charged."
    if payment.status == "pending":
        return "notice", "Payment pending: the credits are added as soon as Stripe confirms it."
    if payment.status == "processing":
        return "notice", (
            "Payment pending: this payment method takes a while to confirm; the credits are "
            "added when it does."
        )
    if payment.status == "expired":
        return "notice", "This checkout expired; nothing was charged."
    if payment.status == "failed":
        return "error", "The payment failed; nothing was charged."
    if payment.status == "mismatch":
        return "error", (
            "The amount paid does not match the package, so no credits were added; an "
            "administrator will look into it."
        )
    return "error", "The payment could not be started; nothing was charged."
