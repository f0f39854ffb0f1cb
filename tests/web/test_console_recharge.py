"""The Recharge pages: packages, buying through Stripe Checkout (the fake), the page a
payment comes back to, the history with receipts, and the admin's view."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.stripe_server import FakeStripe
from tests.support import Api, ApiFactory
from tests.test_payments import stripe_settings


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


@pytest.fixture
async def api(api_factory: ApiFactory, fake: FakeStripe) -> Api:
    """The app with Stripe set up (the pages' `browser_factory` uses this one)."""
    return await api_factory(**stripe_settings(fake))


async def deliver(api: Api, fake: FakeStripe, event: dict[str, Any]) -> None:
    body, headers = fake.signed(event)
    answer = await api.client.post("/webhooks/stripe", content=body, headers=headers)
    assert answer.status_code == 200, answer.text


async def test_buying_a_package_from_the_page_to_the_credits(
    api: Api, fake: FakeStripe, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    page = await user.get("/console/recharge")
    assert page.status_code == 200
    assert 'href="/console/recharge" aria-current="page">Recharge<' in page.text
    assert "Buy 1,100 credits for 100 CNY" in page.text and "No payments yet." in page.text
    answer = await user.submit("/console/recharge", "/console/recharge", package="2")
    assert answer.status_code == 303
    onward = await user.get(answer.headers["location"])
    [session_id] = list(fake.sessions)
    url = fake.sessions[session_id]["url"]
    assert f'content="0; url={url}"' in onward.text and f'href="{url}"' in onward.text
    payment_id = fake.sessions[session_id]["metadata"]["bananastand_payment"]
    back = f"/console/recharge/payments/{payment_id}"

    # Back from Stripe before its event came: only what the webhook said counts.
    early = await user.get(f"{back}?session_id={session_id}")
    assert "Payment pending" in early.text and 'http-equiv="refresh" content="3"' in early.text
    await deliver(api, fake, fake.complete(session_id))
    done = await user.get(f"{back}?session_id={session_id}")
    assert "Payment received, 1,100 credits added." in done.text
    assert 'data-testid="balance">1,100<' in done.text
    history = await user.get("/console/recharge")
    assert ">paid<" in history.text and "/receipts/ch_test_" in history.text


async def test_cancelled_and_foreign_payments(
    api: Api, fake: FakeStripe, browser_factory: Any
) -> None:
    user, other = await browser_factory.signed_up(), await browser_factory.signed_up()
    await user.submit("/console/recharge", "/console/recharge", package="1")
    [session_id] = list(fake.sessions)
    payment_id = fake.sessions[session_id]["metadata"]["bananastand_payment"]
    cancelled = await user.get(f"/console/recharge/payments/{payment_id}?cancelled=1")
    assert "Cancelled, nothing charged." in cancelled.text
    assert "Return to the payment page" in cancelled.text
    assert (await other.get(f"/console/recharge/payments/{payment_id}")).status_code == 404
    assert (await other.get(f"/console/recharge/payments/{payment_id}/checkout")).status_code == 404
    refused = await user.client.post("/console/recharge", data={"package": "1"})
    assert refused.status_code == 403 and len(fake.sessions) == 1
    unknown = await user.submit("/console/recharge", "/console/recharge", package="9")
    assert unknown.status_code == 400 and len(fake.sessions) == 1


async def test_the_admin_sees_payments_refunds_and_the_shortfall(
    api: Api, fake: FakeStripe, browser_factory: Any
) -> None:
    admin = await browser_factory.signed_up(admin=True)
    user = await browser_factory.signed_up()
    await user.submit("/console/recharge", "/console/recharge", package="2")
    [session_id] = list(fake.sessions)
    await deliver(api, fake, fake.complete(session_id))
    target = await user.account(api)
    await api.services.billing.deduct(target.id, 1000, reason="spent")
    await deliver(api, fake, fake.refund(session_id))
    page = await admin.get(f"/console/admin/accounts/{target.id}")
    assert "Payments (Stripe)" in page.text and session_id in page.text
    intent = fake.sessions[session_id]["payment_intent"]
    assert intent in page.text and ">refunded<" in page.text
    assert 'data-testid="shortfall"><strong class="off">1,000<' in page.text
    audit = await admin.get("/console/admin/audit")
    assert "stripe.paid" in audit.text and "stripe.refund" in audit.text
    assert f"session {session_id}" in audit.text
    assert "credits +1,100" in audit.text and "(shortfall 1,000 already spent)" in audit.text
    mine = await user.get(
        "/console/recharge/payments/" + fake.sessions[session_id]["metadata"]["bananastand_payment"]
    )
    assert "100 of its 1,100 credits taken back" in mine.text


async def test_without_stripe_the_console_sells_nothing(api_factory: ApiFactory) -> None:
    import httpx

    from tests.web.conftest import PASSWORD, Browser

    plain = await api_factory()
    assert not plain.services.payments.enabled
    async with httpx.AsyncClient(
        transport=plain.client._transport, base_url="https://testserver"
    ) as client:
        user = Browser(client)
        answer = await user.submit(
            "/console/signup",
            "/console/signup",
            email="plain@example.test",
            password=PASSWORD,
            confirm=PASSWORD,
            setup_code="",
        )
        assert answer.status_code == 303
        dashboard = await user.get("/console")
        assert dashboard.status_code == 200 and "/console/recharge" not in dashboard.text
        assert (await user.get("/console/recharge")).status_code == 404
        refused = await user.submit("/console", "/console/recharge", package="1")
        assert refused.status_code == 404
