"""Buying credits in a real browser: a real `bananastand serve` set up for Stripe,
pointed at the fake Stripe (its checkout page, its signed webhook), driven by
Debian's chromium. Screenshots land in `artifacts/screenshots/`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_console_browser import PHONE, chromium, nav, shot, sign_up
from tests.fakes.stripe_server import FakeStripe

__all__ = ["chromium"]  # the module's browser fixture, shared


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


def watch(page: Any) -> list[str]:
    """Console errors, failed requests and error answers the page meets."""
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None
    )
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on(
        "response",
        lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    return problems


def test_a_user_buys_credits_with_stripe_checkout(
    chromium: Any, server_factory: Any, fake: FakeStripe
) -> None:
    server = server_factory(
        stripe_secret_key=fake.api_key,
        stripe_webhook_secret=fake.webhook_secret,
        stripe_api_base=fake.url,
    )
    fake.webhook_url = server.url("/webhooks/stripe")
    server.start()
    context = chromium.new_context()
    page = context.new_page()
    problems = watch(page)
    sign_up(page, server, "buyer@example.test")
    assert page.get_by_test_id("api-access").inner_text() == "Not enabled"

    nav(page, "Recharge").click()
    assert page.get_by_test_id("balance").inner_text() == "0"
    shot(page, "18-recharge")
    page.get_by_role("button", name="Buy 12,000 credits for 1,000 CNY").click()
    # On to Stripe's checkout page (the fake's), then Pay: Stripe signs and sends
    # `checkout.session.completed` to the server, and the browser comes back.
    page.wait_for_url(f"{fake.url}/c/pay/**")
    assert page.get_by_role("heading", name="Pay 1000.00 CNY").is_visible()
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(server.url("/console/recharge/payments/**"))
    assert fake.deliveries == [200]
    assert page.get_by_test_id("outcome").inner_text() == "Payment received, 12,000 credits added."
    assert page.get_by_test_id("balance").inner_text() == "12,000"
    shot(page, "19-recharge-paid")

    nav(page, "Dashboard").click()
    assert page.get_by_test_id("balance").inner_text() == "12,000"
    assert page.get_by_test_id("api-access").inner_text() == "Enabled"  # 1,000 CNY: unlocked

    # Another, cancelled on Stripe's page: nothing charged.
    nav(page, "Recharge").click()
    page.get_by_role("button", name="Buy 100 credits for 10 CNY").click()
    page.wait_for_url(f"{fake.url}/c/pay/**")
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(server.url("/console/recharge/payments/**"))
    assert page.get_by_test_id("outcome").inner_text() == "Cancelled, nothing charged."

    nav(page, "Recharge").click()
    rows = page.get_by_test_id("payment")
    assert rows.count() == 2
    assert "paid" in rows.nth(1).inner_text() and "pending" in rows.nth(0).inner_text()
    assert rows.nth(1).get_by_role("link", name="Receipt").get_attribute("href", timeout=1000)
    shot(page, "20-recharge-history")

    # Phone width: nothing wider than the screen.
    page.set_viewport_size(PHONE)
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "21-recharge-phone")
    assert problems == []
    context.close()
