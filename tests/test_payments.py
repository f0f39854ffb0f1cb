"""Self-serve recharge through Stripe: the official library against a fake Stripe
on 127.0.0.1, and webhook deliveries signed exactly as Stripe signs them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bananastand.db.models import Account, AuditEntry, LedgerEntry, Payment, StripeEvent
from tests.fakes.stripe_server import FakeStripe
from tests.support import BOTH_DEPLOYMENTS, Api, ApiFactory, make_settings
from tests.test_money_races import assert_books_agree


def stripe_settings(fake: FakeStripe) -> dict[str, Any]:
    return {
        "stripe_secret_key": fake.api_key,
        "stripe_webhook_secret": fake.webhook_secret,
        "stripe_api_base": fake.url,
    }


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


@dataclass
class Shop:
    api: Api
    fake: FakeStripe

    async def customer(self, *, api_access: bool = False) -> Account:
        import secrets

        return await self.api.services.accounts.create(
            email=f"buyer-{secrets.token_hex(4)}@example.test", api_access=api_access
        )

    async def buy(self, account: Account | None = None, package: int = 2) -> tuple[Account, str]:
        """A checkout started for the package: (the account, the session id)."""
        account = account or await self.customer()
        payment = await self.api.services.payments.start_checkout(account, package)
        assert payment.checkout_session_id is not None
        return account, payment.checkout_session_id

    async def post(self, event: dict[str, Any], **signing: Any) -> httpx.Response:
        body, headers = self.fake.signed(event, **signing)
        return await self.api.client.post("/webhooks/stripe", content=body, headers=headers)

    async def deliver(self, event: dict[str, Any]) -> str:
        answer = await self.post(event)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["outcome"])

    async def payment(self, session_id: str) -> Payment:
        found = await self.api.services.db.read(
            lambda tx: tx.session.scalar(
                select(Payment).where(Payment.checkout_session_id == session_id)
            )
        )
        assert found is not None
        return found

    async def balance(self, account: Account) -> int:
        return await self.api.services.billing.balance(account.id)

    async def account(self, account: Account) -> Account:
        return await self.api.services.accounts.get(account.id)

    async def audit(self, account: Account) -> list[AuditEntry]:
        return await self.api.services.admin.audit_log(account_id=account.id)

    async def ledger(self, account: Account) -> list[tuple[int, str]]:
        return await self.api.services.db.read(
            lambda tx: [
                (amount, reason)
                for amount, reason in tx.session.execute(
                    select(LedgerEntry.amount, LedgerEntry.reason)
                    .where(LedgerEntry.account_id == account.id)
                    .order_by(LedgerEntry.id)
                )
            ]
        )


@pytest.fixture
async def shop(api_factory: ApiFactory, fake: FakeStripe) -> Shop:
    return Shop(await api_factory(**stripe_settings(fake)), fake)


# --- buying ---------------------------------------------------------------------------
async def test_a_checkout_session_is_made_through_the_library(shop: Shop) -> None:
    account, session_id = await shop.buy(package=2)
    payment = await shop.payment(session_id)
    assert (payment.status, payment.amount_minor, payment.currency, payment.credits) == (
        "pending",
        10000,
        "CNY",
        1100,
    )
    assert payment.checkout_url == f"{shop.fake.url}/c/pay/{session_id}"
    [made] = [r for r in shop.fake.requests if r.path == "/v1/checkout/sessions"]
    assert made.headers["authorization"] == f"Bearer {shop.fake.api_key}"
    assert made.headers["idempotency-key"] == f"bananastand-checkout-{payment.id}"
    assert "stripe-version" in made.headers
    params = made.params
    assert params["mode"] == "payment"
    assert params["line_items"][0]["price_data"] == {
        "currency": "cny",
        "unit_amount": "10000",
        "product_data": {"name": "1,100 credits"},
    }
    assert params["metadata"] == {
        "bananastand_payment": payment.id,
        "bananastand_account": account.id,
    }
    assert params["payment_intent_data"]["metadata"] == params["metadata"]
    assert params["success_url"].startswith(
        f"https://images.example.test/console/recharge/payments/{payment.id}?session_id="
    )
    assert "payment_method_types" not in params  # as configured at Stripe
    assert await shop.balance(account) == 0  # nothing before a verified event


async def test_stripe_refusing_a_session_charges_nothing_and_says_so(shop: Shop) -> None:
    from bananastand.errors import PaymentProviderError

    shop.fake.fail_next_create = True
    account = await shop.customer()
    with pytest.raises(PaymentProviderError) as raised:
        await shop.api.services.payments.start_checkout(account, 1)
    assert "nothing was charged" in raised.value.message
    [payment] = await shop.api.services.payments.for_account(account.id)
    assert payment.status == "error"


async def test_settings_refuse_a_key_without_a_webhook_secret(tmp_path: Any) -> None:
    from bananastand.container import Services

    settings = make_settings(tmp_path, stripe_secret_key="sk_test_x")
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        Services.build(settings)


def test_packages_come_from_json_and_refuse_duplicates(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "BANANASTAND_STRIPE_PACKAGES",
        '[{"price": "100", "credits": 1100}, {"price": 10, "credits": 100}]',
    )
    settings = make_settings(tmp_path)
    assert [(p.price, p.credits) for p in settings.stripe_packages] == [
        (Decimal(10), 100),
        (Decimal(100), 1100),
    ]
    monkeypatch.setenv(
        "BANANASTAND_STRIPE_PACKAGES",
        '[{"price": "10", "credits": 1}, {"price": "10.00", "credits": 2}]',
    )
    with pytest.raises(ValueError, match="same price"):
        make_settings(tmp_path)


# --- crediting ------------------------------------------------------------------------
async def test_a_paid_session_credits_once_and_unlocks_api_access(shop: Shop) -> None:
    account, session_id = await shop.buy(package=3)  # 1,000 CNY: the threshold
    event = shop.fake.complete(session_id)
    assert await shop.deliver(event) == "paid"
    assert await shop.balance(account) == 12000
    after = await shop.account(account)
    assert after.api_access and after.api_access_auto_at is not None
    payment = await shop.payment(session_id)
    assert payment.status == "paid" and payment.recharge_id is not None
    assert payment.payment_intent_id == shop.fake.sessions[session_id]["payment_intent"]
    assert payment.charge_id and payment.charge_id.startswith("ch_test_")
    assert payment.receipt_url == f"{shop.fake.url}/receipts/{payment.charge_id}"
    [recharge] = await shop.api.services.billing.recharges(account.id)
    assert (recharge.money_amount, recharge.currency, recharge.credits) == (
        Decimal("1000.00"),
        "CNY",
        12000,
    )
    [entry] = await shop.audit(account)
    assert (entry.actor, entry.action) == ("stripe", "stripe.paid")
    assert entry.details["session"] == session_id and entry.details["event"] == event["id"]
    assert entry.details["api_access_enabled"] is True
    # Stripe delivers again (a replay): nothing changes.
    assert await shop.deliver(event) == "duplicate"
    assert await shop.balance(account) == 12000
    assert await assert_books_agree(shop.api, account.id) == 12000
    scraped = (await shop.api.client.get("/metrics")).text
    assert 'bananastand_payments_total{outcome="paid"}' in scraped
    assert 'bananastand_stripe_events_total{outcome="duplicate"}' in scraped


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "no signature", "stale", "body changed", "not utf-8", "not a signature"],
)
async def test_a_delivery_that_does_not_verify_changes_nothing(shop: Shop, tamper: str) -> None:
    account, session_id = await shop.buy()
    event = shop.fake.complete(session_id)
    body, headers = shop.fake.signed(event)
    if tamper == "wrong secret":
        body, headers = shop.fake.signed(event, secret="whsec_someone_else")
    elif tamper == "no signature":
        del headers["stripe-signature"]
    elif tamper == "stale":  # signed correctly, six minutes ago (a replay)
        body, headers = shop.fake.signed(event, timestamp=int(time.time()) - 360)
    elif tamper == "body changed":
        body = body.replace(b'"amount_total": 10000', b'"amount_total": 10001')
    elif tamper == "not utf-8":
        body = b"\xff\xfe" + body
    else:
        headers["stripe-signature"] = "garbage"
    answer = await shop.api.client.post("/webhooks/stripe", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"] == "invalid_signature"
    assert shop.fake.webhook_secret not in answer.text and "Traceback" not in answer.text
    assert await shop.balance(account) == 0
    assert (await shop.payment(session_id)).status == "pending"
    events = await shop.api.services.db.read(
        lambda tx: list(tx.session.scalars(select(StripeEvent)))
    )
    assert events == []


async def test_a_paid_amount_or_currency_that_is_not_the_package_credits_nothing(
    shop: Shop,
) -> None:
    account, session_id = await shop.buy(package=2)
    assert await shop.deliver(shop.fake.complete(session_id, amount_total=100)) == "mismatch"
    other, other_session = await shop.buy(package=2)
    assert await shop.deliver(shop.fake.complete(other_session, currency="usd")) == "mismatch"
    for buyer, session in ((account, session_id), (other, other_session)):
        assert await shop.balance(buyer) == 0
        assert (await shop.payment(session)).status == "mismatch"
        [entry] = await shop.audit(buyer)
        assert entry.action == "stripe.mismatch" and entry.details["expected"] == "10000 CNY"
    # A later event for the same session cannot credit it either.
    assert await shop.deliver(shop.fake.async_payment(session_id)) == "unchanged"
    assert await shop.balance(account) == 0


async def test_an_event_for_a_session_of_another_app_is_acknowledged(shop: Shop) -> None:
    stranger = shop.fake._create_session(
        {"line_items": [{"price_data": {"currency": "cny", "unit_amount": "500"}}]}
    )
    assert await shop.deliver(shop.fake.complete(stranger["id"])) == "unknown"
    assert await shop.deliver(
        {**shop.fake.complete(stranger["id"]), "type": "customer.created"}
    ) == ("ignored")


async def test_a_delayed_method_credits_when_it_succeeds(shop: Shop) -> None:
    account, session_id = await shop.buy(package=1)
    completed = shop.fake.complete(session_id, paid=False)
    assert await shop.deliver(completed) == "processing"
    assert await shop.balance(account) == 0
    assert await shop.deliver(shop.fake.async_payment(session_id)) == "paid"
    assert await shop.balance(account) == 100
    # The completed event again (Stripe retries): paid stays paid, credited once.
    assert await shop.deliver(completed) == "duplicate"
    failed_account, failed_session = await shop.buy(package=1)
    await shop.deliver(shop.fake.complete(failed_session, paid=False))
    assert await shop.deliver(shop.fake.async_payment(failed_session, succeeded=False)) == "failed"
    assert await shop.balance(failed_account) == 0


async def test_events_out_of_order_credit_once(shop: Shop) -> None:
    account, session_id = await shop.buy(package=1)
    completed = shop.fake.complete(session_id, paid=False)
    succeeded = shop.fake.async_payment(session_id)
    assert await shop.deliver(succeeded) == "paid"
    assert await shop.deliver(completed) == "unchanged"  # older news: not back to processing
    assert (await shop.payment(session_id)).status == "paid"
    assert await shop.balance(account) == 100
    # An expiry notice after it was paid changes nothing either.
    assert await shop.deliver(shop.fake.expire(session_id)) == "unchanged"
    expired_account, expired_session = await shop.buy(package=1)
    assert await shop.deliver(shop.fake.expire(expired_session)) == "expired"
    assert await shop.balance(expired_account) == 0


# --- money going back -------------------------------------------------------------------
async def test_a_refund_after_the_credits_were_spent_takes_back_what_is_left(shop: Shop) -> None:
    account, session_id = await shop.buy(package=3)
    await shop.deliver(shop.fake.complete(session_id))
    assert (await shop.account(account)).api_access
    await shop.api.services.billing.deduct(account.id, 11990, reason="spent on images")
    refund = shop.fake.refund(session_id)
    assert await shop.deliver(refund) == "refunded"
    assert await shop.balance(account) == 0  # never below zero
    payment = await shop.payment(session_id)
    assert (payment.amount_refunded_minor, payment.credits_clawed_back) == (100000, 10)
    assert payment.credits_shortfall == 11990
    assert await shop.api.services.billing.recharged_total(account.id) == 0
    assert not (await shop.account(account)).api_access  # it was on only by the threshold
    entry = (await shop.audit(account))[0]
    assert (entry.actor, entry.action) == ("stripe", "stripe.refund")
    assert entry.details["shortfall"] == 11990 and entry.details["api_access_disabled"] is True
    assert (await shop.ledger(account))[-1] == (-10, "reversal")
    assert await shop.deliver(refund) == "duplicate"
    assert await assert_books_agree(shop.api, account.id) == 0


async def test_partial_refund_then_a_lost_dispute(shop: Shop) -> None:
    account, session_id = await shop.buy(package=2)  # 100 CNY, 1,100 credits
    await shop.deliver(shop.fake.complete(session_id))
    first = shop.fake.refund(session_id, 3000)
    second = shop.fake.refund(session_id, 1000)
    assert await shop.deliver(second) == "partially_refunded"  # 40 CNY back in all
    assert await shop.deliver(first) == "partially_refunded"  # older, cumulative: no more
    assert await shop.balance(account) == 1100 - 440
    assert await shop.api.services.billing.recharged_total(account.id) == Decimal("60.00")
    assert await shop.deliver(shop.fake.dispute_closed(session_id, status="won")) == "unchanged"
    assert await shop.deliver(shop.fake.dispute_closed(session_id)) == "disputed_lost"
    assert await shop.balance(account) == 0
    payment = await shop.payment(session_id)
    assert (payment.status, payment.credits_clawed_back, payment.credits_shortfall) == (
        "disputed_lost",
        1100,
        0,
    )
    assert await shop.api.services.billing.recharged_total(account.id) == 0
    assert await assert_books_agree(shop.api, account.id) == 0


async def test_access_an_admin_gave_survives_a_refund(shop: Shop) -> None:
    account, session_id = await shop.buy(package=3)
    await shop.deliver(shop.fake.complete(session_id))
    admin = shop.api.services.admin
    await admin.update("boss@example.test", account.id, api_access=False)
    await admin.update("boss@example.test", account.id, api_access=True)
    await shop.deliver(shop.fake.refund(session_id))
    assert (await shop.account(account)).api_access
    # An account that had access from the start keeps it too.
    veteran = await shop.customer(api_access=True)
    _, other = await shop.buy(veteran, package=3)
    await shop.deliver(shop.fake.complete(other))
    await shop.deliver(shop.fake.refund(other))
    assert (await shop.account(veteran)).api_access


async def test_a_refund_that_arrives_before_the_payment_is_applied_with_it(shop: Shop) -> None:
    account, session_id = await shop.buy(package=2)
    completed = shop.fake.complete(session_id)
    refund = shop.fake.refund(session_id)
    assert await shop.deliver(refund) == "unchanged"  # known by its metadata, not credited yet
    assert await shop.deliver(completed) == "refunded"
    assert await shop.balance(account) == 0
    assert [reason for _amount, reason in await shop.ledger(account)] == ["recharge", "reversal"]
    assert await assert_books_agree(shop.api, account.id) == 0


# --- races ----------------------------------------------------------------------------
@BOTH_DEPLOYMENTS
async def test_a_duplicated_event_raced_in_parallel_credits_once(
    api_factory: ApiFactory, fake: FakeStripe
) -> None:
    shop = Shop(await api_factory(**stripe_settings(fake)), fake)
    account, session_id = await shop.buy(package=2)
    completed = shop.fake.complete(session_id, paid=False)
    succeeded = shop.fake.async_payment(session_id)
    answers = await asyncio.gather(
        *[shop.post(completed) for _ in range(6)], *[shop.post(succeeded) for _ in range(6)]
    )
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    outcomes = [a.json()["outcome"] for a in answers]
    assert outcomes.count("paid") == 1, outcomes
    assert await shop.balance(account) == 1100
    assert [reason for _amount, reason in await shop.ledger(account)] == ["recharge"]
    assert len(await shop.api.services.billing.recharges(account.id)) == 1
    refund = shop.fake.refund(session_id, 5000)
    answers = await asyncio.gather(*[shop.post(refund) for _ in range(8)])
    assert [a.json()["outcome"] for a in answers].count("partially_refunded") == 1
    assert await shop.balance(account) == 550
    assert await assert_books_agree(shop.api, account.id) == 550


# --- without Stripe -----------------------------------------------------------------------
async def test_without_a_stripe_key_nothing_is_for_sale(api: Api) -> None:
    answer = await api.client.post("/webhooks/stripe", content=b"{}")
    assert answer.status_code == 404
    assert not api.services.payments.enabled
