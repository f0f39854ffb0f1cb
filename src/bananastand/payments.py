"""Self-serve recharge: Stripe Checkout sessions, and the verified webhooks that
turn them into credits.

    start_checkout ──► a `payments` row (pending) ──► Stripe Checkout Session
                                                      (the user pays there)
    POST /webhooks/stripe ──► signature verified (`stripe` library, tolerance)
         ──► one transaction: the event's id recorded (once), the payment row
             locked, its state moved forward, credits and the recharge written by
             the ledger, an audit entry ("stripe")

Only a verified event moves money: the success page a browser comes back to
only reads. Redelivered and concurrently duplicated events change nothing (the
event id is unique; the payment row is locked; a paid payment is never paid
again). Amounts are integers in the currency's minor unit; a session whose
amount or currency is not the one sold is held as `mismatch`, nothing credited.
Money going back (a refund, a lost dispute) takes back the credits it bought,
in proportion, never below a zero balance (the shortfall is kept on the
payment), and lowers the recharge total (see `billing.record_reversal`).

Calls to Stripe (making a session, reading a receipt) happen outside any
database transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bananastand import metrics
from bananastand.billing import Billing
from bananastand.config import Settings
from bananastand.db import Database, Tx
from bananastand.db.models import Account, AuditEntry, Payment, StripeEvent, utcnow
from bananastand.errors import (
    InvalidRequest,
    InvalidSignature,
    NotFound,
    PaymentProviderError,
    TooManyAttempts,
)
from bananastand.ids import new_id

log = logging.getLogger(__name__)

ACTOR = "stripe"  # the audit log's actor for what Stripe's events did
# Stripe's zero-decimal currencies: amounts are in whole units.
ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
# Three-decimal currencies do not fit the recharge's two decimals.
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
# Sessions one account may open in the window below (a button pressed in a loop).
MAX_NEW_SESSIONS = 10
NEW_SESSIONS_WINDOW = timedelta(minutes=10)

# Payment states that can still become paid.
OPEN = ("pending", "processing")
# Payment states whose credits were given.
CREDITED = ("paid", "partially_refunded", "refunded", "disputed_lost")


def minor_units(price: Decimal, currency: str) -> int:
    """`price` in the currency's smallest unit: 100.00 CNY -> 10000, 500 JPY -> 500."""
    exponent = 0 if currency.upper() in ZERO_DECIMAL else 2
    scaled = price * (10**exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{price} {currency} has more decimals than the currency")
    return int(scaled)


def major_units(amount_minor: int, currency: str) -> Decimal:
    exponent = 0 if currency.upper() in ZERO_DECIMAL else 2
    return (Decimal(amount_minor).scaleb(-exponent)).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class Package:
    """A package on sale; `number` is its place in the list (what a form posts)."""

    number: int
    price: Decimal
    currency: str
    credits: int

    @property
    def amount_minor(self) -> int:
        return minor_units(self.price, self.currency)


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    value: Any = obj
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _text(value: Any) -> str | None:
    """An id field: a string, or the id of an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Receipt:
    charge_id: str | None
    receipt_url: str | None


class Payments:
    """Checkout sessions for packages, and the webhook that credits them."""

    def __init__(self, db: Database, billing: Billing, settings: Settings) -> None:
        self.db = db
        self.billing = billing
        self.currency = settings.payment_currency
        self.base_url = settings.base_url
        self.enabled = settings.payments_enabled
        self.payment_method_types = list(settings.stripe_payment_method_types)
        self.tolerance = settings.stripe_webhook_tolerance_seconds
        self._webhook_secret = settings.stripe_webhook_secret.get_secret_value()
        if settings.stripe_secret_key.get_secret_value() and not self._webhook_secret:
            raise ValueError(
                "BANANASTAND_STRIPE_SECRET_KEY is set without BANANASTAND_STRIPE_WEBHOOK_SECRET: "
                "payments could be taken but never credited"
            )
        if self.currency in THREE_DECIMAL:
            raise ValueError(f"BANANASTAND_STRIPE_CURRENCY {self.currency} is not supported")
        self.packages = [
            Package(number, package.price, self.currency, package.credits)
            for number, package in enumerate(settings.stripe_packages, start=1)
        ]
        for package in self.packages:
            package.amount_minor  # noqa: B018  (refuses prices finer than the currency)
        self._client: Any = None
        self._http: Any = None
        if self.enabled:
            import stripe

            self._http = stripe.HTTPXClient(timeout=30)
            base = settings.stripe_api_base.rstrip("/")
            self._client = stripe.StripeClient(
                settings.stripe_secret_key.get_secret_value(),
                base_addresses={"api": base} if base else None,
                http_client=self._http,
                max_network_retries=2,
            )
        self._handlers: dict[str, Callable[..., str]] = {
            "checkout.session.completed": self._on_session_completed,
            "checkout.session.async_payment_succeeded": self._on_session_completed,
            "checkout.session.async_payment_failed": self._on_session_failed,
            "checkout.session.expired": self._on_session_expired,
            "charge.refunded": self._on_charge_refunded,
            "charge.dispute.closed": self._on_dispute_closed,
        }

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close_async()

    def package(self, number: int) -> Package:
        for package in self.packages:
            if package.number == number:
                return package
        raise InvalidRequest("Choose one of the packages on sale")

    def _require(self) -> None:
        if not self.enabled:
            raise NotFound("Recharging is not offered on this server")

    # --- reading ----------------------------------------------------------------------
    async def for_account(self, account_id: str, *, limit: int = 50) -> list[Payment]:
        """The account's payments, newest first."""

        def work(tx: Tx) -> list[Payment]:
            return list(
                tx.session.scalars(
                    select(Payment)
                    .where(Payment.account_id == account_id)
                    .order_by(Payment.created_at.desc(), Payment.id)
                    .limit(limit)
                )
            )

        return await self.db.read(work)

    async def get(self, payment_id: str, *, account_id: str) -> Payment:
        """One of the account's payments (another's is not found)."""
        payment = await self.db.read(lambda tx: tx.session.get(Payment, payment_id))
        if payment is None or payment.account_id != account_id:
            raise NotFound("No such payment")
        return payment

    # --- buying -----------------------------------------------------------------------
    async def start_checkout(self, account: Account, number: int) -> Payment:
        """A pending payment for the package and its Checkout Session; the caller
        sends the browser to `payment.checkout_url`."""
        self._require()
        package = self.package(number)
        payment_id = "pay_" + new_id()

        def reserve(tx: Tx) -> Payment:
            recent = tx.session.scalar(
                select(func.count())
                .select_from(Payment)
                .where(
                    Payment.account_id == account.id,
                    Payment.created_at >= utcnow() - NEW_SESSIONS_WINDOW,
                )
            )
            if int(recent or 0) >= MAX_NEW_SESSIONS:
                raise TooManyAttempts(
                    "Too many payments started; try again in a few minutes",
                    retry_after=int(NEW_SESSIONS_WINDOW.total_seconds()),
                )
            now = utcnow()
            payment = Payment(
                id=payment_id,
                account_id=account.id,
                amount_minor=package.amount_minor,
                currency=package.currency,
                credits=package.credits,
                status="pending",
                created_at=now,
                updated_at=now,
            )
            tx.session.add(payment)
            return payment

        await self.db.write(reserve)
        metrics.PAYMENTS.labels("created").inc()
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params=self._session_params(account, package, payment_id),
                options={"idempotency_key": f"bananastand-checkout-{payment_id}"},
            )
        except Exception as exc:
            log.warning("Stripe refused or could not be reached for a session: %s", _why(exc))
            await self._set(payment_id, status="error")
            metrics.PAYMENTS.labels("error").inc()
            raise PaymentProviderError() from None
        return await self._set(payment_id, checkout_session_id=session.id, checkout_url=session.url)

    def _session_params(self, account: Account, package: Package, payment_id: str) -> Any:
        console = f"{self.base_url}/console/recharge"
        ours = {"bananastand_payment": payment_id, "bananastand_account": account.id}
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": package.currency.lower(),
                        "unit_amount": package.amount_minor,
                        "product_data": {"name": f"{package.credits:,} credits"},
                    },
                }
            ],
            "client_reference_id": account.id,
            "customer_email": account.email,
            "metadata": ours,
            "payment_intent_data": {"metadata": ours},
            "success_url": f"{console}/payments/{payment_id}?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{console}/payments/{payment_id}?cancelled=1",
        }
        if self.payment_method_types:
            params["payment_method_types"] = self.payment_method_types
            if "wechat_pay" in self.payment_method_types:
                params["payment_method_options"] = {"wechat_pay": {"client": "web"}}
        return params

    async def _set(self, payment_id: str, **values: Any) -> Payment:
        def work(tx: Tx) -> Payment:
            payment = tx.session.get(Payment, payment_id)
            assert payment is not None
            for name, value in values.items():
                setattr(payment, name, value)
            payment.updated_at = utcnow()
            return payment

        return await self.db.write(work)

    # --- the webhook ------------------------------------------------------------------
    def verify(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event, if `Stripe-Signature` verifies with the endpoint's secret and is
        recent; `InvalidSignature` (400) otherwise."""
        self._require()
        import stripe

        try:
            self._client.construct_event(payload, signature, self._webhook_secret, self.tolerance)
            event = json.loads(payload)
        except stripe.SignatureVerificationError:
            metrics.STRIPE_EVENTS.labels("rejected").inc()
            raise InvalidSignature() from None
        except (ValueError, TypeError, AttributeError):
            metrics.STRIPE_EVENTS.labels("rejected").inc()
            raise InvalidSignature("The webhook's body is not a Stripe event") from None
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            metrics.STRIPE_EVENTS.labels("rejected").inc()
            raise InvalidSignature("The webhook's body is not a Stripe event")
        return event

    async def handle(self, payload: bytes, signature: str | None) -> str:
        """Verify and apply one webhook delivery; answers what became of it."""
        event = self.verify(payload, signature)
        outcome = await self.apply(event)
        metrics.STRIPE_EVENTS.labels(
            outcome if outcome in ("duplicate", "ignored", "unknown") else "applied"
        ).inc()
        return outcome

    async def apply(self, event: dict[str, Any]) -> str:
        event_id, kind = str(event["id"]), str(event.get("type", ""))
        handler = self._handlers.get(kind)
        if handler is None:
            return "ignored"
        obj = _get(event, "data", "object")
        if not isinstance(obj, Mapping):
            raise InvalidRequest("The event has no object")
        seen = await self.db.read(lambda tx: tx.session.get(StripeEvent, event_id))
        if seen is not None:
            return "duplicate"
        receipt = await self._receipt(kind, obj)
        try:
            outcome = await self.db.write(
                lambda tx: self._apply(tx, event_id, kind, obj, handler, receipt)
            )
        except IntegrityError:
            # The same event, delivered twice at once, was recorded by the other.
            return "duplicate"
        if outcome not in ("duplicate", "unknown", "unchanged"):
            metrics.PAYMENTS.labels(outcome).inc()
        return outcome

    def _apply(
        self,
        tx: Tx,
        event_id: str,
        kind: str,
        obj: Mapping[str, Any],
        handler: Callable[..., str],
        receipt: Receipt | None,
    ) -> str:
        payment = self._find(tx, kind, obj)
        # After the payment's lock: a duplicate that waited for it sees the first.
        if tx.session.get(StripeEvent, event_id) is not None:
            return "duplicate"
        if payment is None:
            log.info("Stripe event %s (%s) is for no payment of this server", event_id, kind)
            outcome = "unknown"
        else:
            outcome = handler(tx, payment, obj, event_id, receipt)
            payment.updated_at = utcnow()
        tx.session.add(
            StripeEvent(
                id=event_id,
                type=kind[:64],
                payment_id=payment.id if payment else None,
                outcome=outcome,
                created_at=utcnow(),
            )
        )
        tx.session.flush()  # a concurrent twin fails here, not at commit
        return outcome

    def _find(self, tx: Tx, kind: str, obj: Mapping[str, Any]) -> Payment | None:
        """The payment an event is about, locked: by session id, by payment intent, or
        by the payment id the session put in the metadata."""
        query = select(Payment).with_for_update()
        ours = _get(obj, "metadata", "bananastand_payment")
        if kind.startswith("checkout.session."):
            session_id = _text(obj.get("id"))
            if session_id:
                found = tx.session.scalar(query.where(Payment.checkout_session_id == session_id))
                if found is not None:
                    return found
        else:
            intent = _text(obj.get("payment_intent"))
            if intent:
                found = tx.session.scalar(query.where(Payment.payment_intent_id == intent))
                if found is not None:
                    return found
        if isinstance(ours, str):
            return tx.session.scalar(query.where(Payment.id == ours))
        return None

    async def _receipt(self, kind: str, obj: Mapping[str, Any]) -> Receipt | None:
        """The charge and its receipt for a session just paid (one call to Stripe,
        before the transaction; a failure only leaves the receipt out)."""
        if kind.startswith("charge."):
            if obj.get("object") == "charge":
                return Receipt(_text(obj.get("id")), _text(obj.get("receipt_url")))
            return None
        intent = _text(obj.get("payment_intent"))
        if not intent or obj.get("payment_status") != "paid":
            return None
        try:
            found = await self._client.v1.payment_intents.retrieve_async(
                intent, params={"expand": ["latest_charge"]}
            )
        except Exception as exc:
            log.warning("could not read the receipt of payment intent %s: %s", intent, _why(exc))
            return None
        charge = found.to_dict().get("latest_charge")
        if charge is None or isinstance(charge, str):
            return Receipt(charge, None)
        return Receipt(_text(charge.get("id")), _text(charge.get("receipt_url")))

    # --- what each event does (in the transaction, the payment locked) ---------------
    def _on_session_completed(
        self,
        tx: Tx,
        payment: Payment,
        session: Mapping[str, Any],
        event_id: str,
        receipt: Receipt | None,
    ) -> str:
        if payment.checkout_session_id is None:  # made, but its id never recorded
            payment.checkout_session_id = _text(session.get("id"))
        payment.payment_intent_id = payment.payment_intent_id or _text(
            session.get("payment_intent")
        )
        if payment.status not in OPEN:
            return "unchanged"  # paid already (the other event of the pair), or ended
        amount, currency = session.get("amount_total"), str(session.get("currency") or "")
        owner = _get(session, "metadata", "bananastand_account")
        if (
            amount != payment.amount_minor
            or currency.upper() != payment.currency
            or (owner is not None and owner != payment.account_id)
        ):
            payment.status = "mismatch"
            tx.session.add(
                self._audit(
                    "stripe.mismatch",
                    payment,
                    event_id,
                    expected=f"{payment.amount_minor} {payment.currency}",
                    got=f"{amount} {currency.upper()}",
                )
            )
            log.warning("payment %s: paid %s %s, not the package's", payment.id, amount, currency)
            return "mismatch"
        if session.get("payment_status") not in ("paid", "no_payment_required"):
            payment.status = "processing"  # a delayed method: its own event follows
            return "processing"
        account = _lock_account(tx, payment.account_id)
        was_on = account.api_access
        recharge = self.billing.record_recharge(
            tx,
            account,
            money=major_units(payment.amount_minor, payment.currency),
            currency=payment.currency,
            credits=payment.credits,
            note=f"stripe {payment.id}",
        )
        payment.status, payment.recharge_id, payment.paid_at = "paid", recharge.id, utcnow()
        if receipt is not None:
            payment.charge_id = payment.charge_id or receipt.charge_id
            payment.receipt_url = payment.receipt_url or receipt.receipt_url
        tx.session.add(
            self._audit(
                "stripe.paid",
                payment,
                event_id,
                money=str(major_units(payment.amount_minor, payment.currency)),
                credits=payment.credits,
                api_access_enabled=account.api_access and not was_on,
            )
        )
        # Money that went back before this event came: take it back now.
        self._reverse(tx, payment, event_id, gone_before=0)
        return payment.status

    def _on_session_failed(
        self, tx: Tx, payment: Payment, session: Mapping[str, Any], event_id: str, *_: Any
    ) -> str:
        if payment.status not in OPEN:
            return "unchanged"
        payment.status = "failed"
        tx.session.add(self._audit("stripe.failed", payment, event_id))
        return "failed"

    def _on_session_expired(
        self, tx: Tx, payment: Payment, session: Mapping[str, Any], event_id: str, *_: Any
    ) -> str:
        if payment.status != "pending":
            return "unchanged"
        payment.status = "expired"
        return "expired"

    def _on_charge_refunded(
        self,
        tx: Tx,
        payment: Payment,
        charge: Mapping[str, Any],
        event_id: str,
        receipt: Receipt | None,
    ) -> str:
        if str(charge.get("currency") or "").upper() != payment.currency:
            return "unchanged"
        gone_before = _gone(payment)
        # Cumulative: an older event arriving late changes nothing.
        payment.amount_refunded_minor = max(
            payment.amount_refunded_minor, _int(charge.get("amount_refunded"))
        )
        payment.payment_intent_id = payment.payment_intent_id or _text(charge.get("payment_intent"))
        if receipt is not None:
            payment.charge_id = payment.charge_id or receipt.charge_id
            payment.receipt_url = payment.receipt_url or receipt.receipt_url
        return self._after_money_back(tx, payment, event_id, gone_before)

    def _on_dispute_closed(
        self, tx: Tx, payment: Payment, dispute: Mapping[str, Any], event_id: str, *_: Any
    ) -> str:
        if dispute.get("status") != "lost":
            tx.session.add(
                self._audit("stripe.dispute_closed", payment, event_id, dispute=dispute.get("id"))
            )
            return "unchanged"
        gone_before = _gone(payment)
        payment.amount_disputed_minor = max(
            payment.amount_disputed_minor, _int(dispute.get("amount"))
        )
        return self._after_money_back(tx, payment, event_id, gone_before)

    def _after_money_back(self, tx: Tx, payment: Payment, event_id: str, gone_before: int) -> str:
        if payment.recharge_id is None:
            # Not credited (yet, or a mismatch): kept, and taken back when credited.
            tx.session.add(
                self._audit(
                    "stripe.money_back",
                    payment,
                    event_id,
                    refunded_minor=payment.amount_refunded_minor,
                    disputed_minor=payment.amount_disputed_minor,
                )
            )
            return "unchanged"
        self._reverse(tx, payment, event_id, gone_before=gone_before)
        return payment.status

    def _reverse(self, tx: Tx, payment: Payment, event_id: str, *, gone_before: int) -> None:
        """Take back the credits the money gone since `gone_before` bought."""
        gone = _gone(payment)
        if gone <= gone_before:
            return
        # The credits all money gone so far bought, rounded up, less those counted.
        owed = -(-payment.credits * gone // payment.amount_minor)
        owed -= payment.credits_clawed_back + payment.credits_shortfall
        account = _lock_account(tx, payment.account_id)
        money = major_units(gone - gone_before, payment.currency)
        reversal = self.billing.record_reversal(
            tx,
            account,
            money=money,
            currency=payment.currency,
            credits=max(owed, 0),
            note=f"stripe {payment.id}",
        )
        payment.credits_clawed_back += reversal.taken
        payment.credits_shortfall += reversal.shortfall
        if payment.amount_disputed_minor:
            payment.status = "disputed_lost"
        elif gone >= payment.amount_minor:
            payment.status = "refunded"
        else:
            payment.status = "partially_refunded"
        tx.session.add(
            self._audit(
                "stripe.dispute_lost" if payment.amount_disputed_minor else "stripe.refund",
                payment,
                event_id,
                money_back=str(money),
                credits_taken=reversal.taken,
                shortfall=reversal.shortfall,
                api_access_disabled=reversal.api_access_disabled,
            )
        )

    def _audit(self, action: str, payment: Payment, event_id: str, **details: Any) -> AuditEntry:
        return AuditEntry(
            actor=ACTOR,
            action=action,
            account_id=payment.account_id,
            details={
                "payment": payment.id,
                "status": payment.status,
                "session": payment.checkout_session_id,
                "payment_intent": payment.payment_intent_id,
                "charge": payment.charge_id,
                "event": event_id,
                **details,
            },
            created_at=utcnow(),
        )


def _gone(payment: Payment) -> int:
    """Money that went back, in minor units (a refund and a lost dispute of the same
    charge never add up to more than was paid)."""
    return min(payment.amount_minor, payment.amount_refunded_minor + payment.amount_disputed_minor)


def _lock_account(tx: Tx, account_id: str) -> Account:
    account = tx.session.scalar(select(Account).where(Account.id == account_id).with_for_update())
    if account is None:
        raise NotFound(f"No account {account_id!r}")
    return account


def _why(exc: Exception) -> str:
    """What went wrong, for the log: the error's kind and Stripe's request id, never
    its message (it may quote what was sent)."""
    request_id = getattr(exc, "request_id", None)
    return type(exc).__name__ + (f" (request {request_id})" if request_id else "")
