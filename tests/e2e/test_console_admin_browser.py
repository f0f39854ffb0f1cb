"""The operator's first run and the admin pages in a real browser (Debian's
chromium, driven by Playwright) against a real `bananastand serve`: every page
without a console error or a failed request, in the viewer's time zone, and at
phone width without sideways scrolling."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Server
from tests.e2e.test_console_browser import (
    PHONE,
    chromium,  # noqa: F401 (a fixture)
    nav,
    setup_code,
    shot,
    sign_up,
)

expect = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra").expect

TOKYO = timedelta(hours=9)


class Watch:
    """Everything a page said was wrong: console errors, failed requests, and the
    forms it posted (a reload must post nothing)."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.posts: list[str] = []
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on(
            "requestfailed",
            lambda request: self.errors.append(f"failed: {request.url} {request.failure}"),
        )
        page.on(
            "request",
            lambda request: self.posts.append(request.url) if request.method == "POST" else None,
        )


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], (page.url, width)


def test_the_operator_first_run_and_the_admin_pages(chromium: Any, server_factory: Any) -> None:  # noqa: F811
    server: Server = server_factory(console_admin_page_size=2).start()
    context = chromium.new_context(timezone_id="Asia/Tokyo", locale="en-US")
    page = context.new_page()
    watch = Watch(page)

    # The operator signs up with the setup code: API access and 100 credits at once.
    sign_up(page, server, "operator@example.test", code=setup_code(server))
    assert page.get_by_test_id("api-access").inner_text() == "Enabled"
    assert page.get_by_test_id("balance").inner_text() == "100"
    box = page.get_by_test_id("get-started")
    assert box.get_by_role("heading", name="Get started").is_visible()
    assert page.get_by_test_id("base-url").inner_text() == server.url("/api/v1")
    snippet = page.get_by_test_id("curl-snippet").inner_text()
    assert "$BANANASTAND_API_KEY" in snippet and "nb_" not in snippet
    shot(page, "20-first-run-dashboard")

    # The box's link makes a key; the snippet, run as written, makes an image.
    box.get_by_role("link", name="Create an API key").click()
    page.get_by_label("Name").fill("first")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_test_id("new-key").input_value()
    ran = subprocess.run(
        ["bash", "-c", snippet],
        env={**os.environ, "BANANASTAND_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = json.loads(ran.stdout)
    assert answer["success"] is True and answer["remainingCredits"] == 99, ran
    credits = requests.get(
        server.url("/api/v1/credits"), headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert credits.json() == {"data": {"credits": 99}}
    nav(page, "Dashboard").click()
    assert page.get_by_test_id("get-started").count() == 0
    assert page.get_by_test_id("balance").inner_text() == "99"

    # Times: the viewer's zone (Tokyo here), how long ago, the full time on hover.
    page.goto(server.url("/console/settings/account"))
    since = page.locator("time").first
    utc = datetime.strptime(since.get_attribute("datetime"), "%Y-%m-%dT%H:%M:%SZ")
    local = (utc.replace(tzinfo=UTC) + TOKYO).strftime("%Y-%m-%d %H:%M")
    text = since.inner_text()
    assert text.startswith(local), (text, local)
    assert re.search(r"\((now|\d+ seconds? ago|\d+ minutes? ago)\)$", text), text
    assert "Japan" in since.get_attribute("title") or "GMT+9" in since.get_attribute("title")

    # A failed deduct comes back as a deduct with its values; a reload sends nothing.
    operator = server.cli("admin", "create-account", "zed@example.test")
    assert operator.returncode == 0, operator.stderr
    nav(page, "Admin").click()
    page.get_by_test_id("account-row").get_by_role("link", name="operator@example.test").click()
    account_url = page.url
    page.get_by_label("Deduct").check()
    page.get_by_label("Credits", exact=True).fill("1000")
    page.get_by_label("Reason").fill("chargeback")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(account_url)
    assert "Cannot deduct 1000 credits" in page.get_by_role("alert").first.inner_text()
    assert page.get_by_label("Deduct").is_checked()
    assert page.get_by_label("Credits", exact=True).input_value() == "1000"
    assert page.get_by_label("Reason").input_value() == "chargeback"
    shot(page, "21-admin-failed-deduct")
    posted = len(watch.posts)
    page.reload()
    assert len(watch.posts) == posted
    assert page.get_by_role("alert").count() == 0
    assert page.get_by_label("Grant").is_checked()
    assert page.get_by_test_id("balance").inner_text() == "99"

    # Grant and a new limit: both in the audit log, in words, two entries a page.
    page.get_by_label("Credits", exact=True).fill("5")
    page.get_by_label("Reason").fill("welcome")
    page.get_by_role("button", name="Apply").click()
    assert page.get_by_role("status").first.inner_text() == "Credits changed."
    assert page.get_by_test_id("balance").inner_text() == "104"
    page.get_by_label("Concurrency limit").fill("2")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("link", name="All accounts").click()
    page.get_by_role("link", name="Audit log").click()
    rows = page.get_by_test_id("audit-entry")
    assert rows.count() == 2
    assert "concurrency limit: default → 2" in rows.nth(0).inner_text()
    assert "credits +5 (reason: welcome)" in rows.nth(1).inner_text()
    assert "operator@example.test" in rows.nth(1).inner_text()
    shot(page, "22-admin-audit-log")
    page.get_by_role("link", name="Next page").click()
    older = page.get_by_test_id("audit-entry")
    assert "zed@example.test" in older.nth(0).inner_text()  # made by the CLI
    assert "admin, API access on, credits +100" in older.nth(1).inner_text()
    page.get_by_label("Action").select_option("grant")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_test_id("audit-entry").count() == 1
    page.get_by_label("Action").select_option("")
    page.get_by_label("Account").fill("zed@")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_test_id("audit-entry").count() == 1
    assert "account created" in page.get_by_test_id("audit-entry").inner_text()

    # Accounts: three (the demo account, the operator, zed), two a page, by balance.
    page.goto(server.url("/console/admin/accounts"))
    page.get_by_label("Sort by").select_option("balance")
    page.get_by_role("button", name="Search").click()
    emails = page.get_by_test_id("account-row").get_by_role("link")
    assert emails.all_inner_texts() == ["operator@example.test", "demo@bananastand.local"]
    page.get_by_role("link", name="Next page").click()
    assert emails.all_inner_texts() == ["zed@example.test"]
    assert page.get_by_label("Sort by").input_value() == "balance"
    shot(page, "23-admin-accounts-page-2")

    # An unknown address: the navigation and one heading.
    missing = page.goto(server.url("/console/no/such/page"))
    assert missing is not None and missing.status == 404
    assert nav(page, "Dashboard").is_visible()
    assert page.locator("h1").count() == 1
    assert page.get_by_role("heading", name="Not found").is_visible()
    # Chromium notes the 404 of the page itself on the console: that one is expected.
    expected = [e for e in watch.errors if "status of 404" in e]
    assert len(expected) <= 1, expected
    watch.errors = [e for e in watch.errors if e not in expected]

    # Phone width: no page scrolls sideways (wide tables scroll inside their box).
    page.set_viewport_size(PHONE)
    for path in (
        "/console",
        "/console/settings/account",
        "/console/admin/accounts",
        account_url.removeprefix(server.base_url),
        "/console/admin/audit",
    ):
        page.goto(server.url(path))
        no_sideways_scroll(page)
    shot(page, "24-admin-account-phone")
    assert watch.errors == [], watch.errors
    context.close()


def test_the_first_run_dashboard_fits_a_phone(chromium: Any, server_factory: Any) -> None:  # noqa: F811
    server: Server = server_factory().start()
    page = chromium.new_page(viewport=PHONE)
    watch = Watch(page)
    sign_up(page, server, "phone@example.test", code=setup_code(server))
    assert page.get_by_test_id("get-started").is_visible()
    no_sideways_scroll(page)
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    shot(page, "25-first-run-dashboard-phone")
    assert watch.errors == [], watch.errors
    page.close()
