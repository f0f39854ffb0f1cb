"""The web console in a real browser (Debian's chromium, driven by Playwright)
against a real `bananastand serve` process, the way a new user meets it.

Screenshots of every page land in `artifacts/screenshots/` (see the README).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Server

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "a long test password"
PHONE = {"width": 390, "height": 844}

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: `scripts/browser-up` installs it"
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def nav(page: Any, name: str) -> Any:
    """A link of the console's navigation bar."""
    return page.get_by_role("navigation", name="Console").get_by_role("link", name=name, exact=True)


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def setup_code(server: Server) -> str:
    """The admin setup code the server printed on its console."""
    for line in server.output:
        if "admin setup code:" in line:
            return line.split("admin setup code:")[1].strip()
    raise AssertionError("no admin setup code was printed:\n" + "".join(server.output))


def sign_up(
    page: Any, server: Server, email: str, *, screenshots: bool = False, code: str = ""
) -> None:
    page.goto(server.url("/"))
    assert page.url.startswith(server.url("/console/signin"))
    if screenshots:
        shot(page, "01-sign-in")
    page.get_by_role("link", name="Create one").click()
    if screenshots:
        shot(page, "02-sign-up")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    if code:
        page.get_by_label("Admin setup code").fill(code)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(server.url("/console?done=welcome"))


def api_status(server: Server, key: str) -> tuple[int, dict[str, Any]]:
    answer = requests.get(
        server.url("/api/v1/credits"), headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return answer.status_code, answer.json()


def test_a_new_user_from_sign_up_to_a_revoked_key(chromium: Any, server_factory: Any) -> None:
    server = server_factory(builtin_latency_seconds=1.5, builtin_steps=6).start()
    operator = chromium.new_context()
    user = chromium.new_context()
    admin_page, page = operator.new_page(), user.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    # The operator signs up with the admin setup code the server printed.
    sign_up(admin_page, server, "operator@example.test", code=setup_code(server))
    assert nav(admin_page, "Admin").is_visible()

    # A user signs up: no API access yet, and the dashboard says what unlocks it.
    sign_up(page, server, "user@example.test", screenshots=True)
    assert page.get_by_test_id("api-access").inner_text() == "Not enabled"
    assert "1,000 CNY" in page.content()
    assert nav(page, "Admin").count() == 0
    refused = page.goto(server.url("/console/admin/accounts"))
    assert refused is not None and refused.status == 403
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    shot(page, "17-admin-refused")
    page.go_back()

    # Settings → API Keys: create one and read it off the page.
    nav(page, "API Keys").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_test_id("new-key").input_value()
    assert key.startswith("nb_")
    shot(page, "03-api-key-created")
    status, body = api_status(server, key)
    assert (status, body["type"]) == (403, "api_access_disabled")

    # The admin records a recharge that reaches the threshold: API access turns on.
    nav(admin_page, "Admin").click()
    admin_page.get_by_label("Search by email").fill("user@")
    admin_page.get_by_role("button", name="Search").click()
    shot(admin_page, "04-admin-accounts")
    admin_page.get_by_role("link", name="user@example.test").click()
    admin_page.get_by_label("Amount paid (CNY)").fill("1000")
    admin_page.get_by_label("Credits it buys").fill("100")
    admin_page.get_by_role("button", name="Record recharge").click()
    assert admin_page.get_by_test_id("api-access").inner_text() == "on"
    assert admin_page.get_by_test_id("balance").inner_text() == "100"
    shot(admin_page, "05-admin-account")
    admin_page.get_by_role("link", name="All accounts").click()
    admin_page.get_by_role("link", name="Audit log").click()
    audit = admin_page.locator("tbody tr").first.inner_text()
    assert "operator@example.test" in audit and "recharge" in audit
    assert "API access: off → on" in audit
    shot(admin_page, "06-admin-audit-log")
    status, body = api_status(server, key)
    assert (status, body["data"]["credits"]) == (200, 100)

    nav(page, "Dashboard").click()
    assert page.get_by_test_id("api-access").inner_text() == "Enabled"
    assert page.get_by_test_id("balance").inner_text() == "100"
    shot(page, "07-dashboard")

    # The playground: the cost before sending, live progress, the result, the balance.
    nav(page, "Playground").click()
    page.get_by_label("Prompt").fill("A banana stand at sunset, watercolor")
    page.get_by_label("Quantity").fill("2")
    assert page.locator("#cost").inner_text() == "2"
    page.evaluate(
        """() => {
            window.seen = [];
            const bar = document.getElementById('progress');
            new MutationObserver(() => window.seen.push(bar.value))
                .observe(bar, {attributes: true});
        }"""
    )
    page.get_by_role("button", name="Generate").click()
    page.locator("#images img").nth(1).wait_for()
    seen = page.evaluate("window.seen")
    assert any(0 < value < 100 for value in seen), seen
    assert seen[-1] == 100
    assert page.get_by_test_id("balance").inner_text() == "98"
    assert page.locator("#images img").first.evaluate("img => img.complete && img.naturalWidth")
    shot(page, "08-playground")

    # History: the generation is there, with thumbnails, and opens in a detail view.
    nav(page, "Generations").click()
    entry = page.get_by_test_id("generation").first
    assert "A banana stand at sunset" in entry.inner_text()
    assert "completed" in entry.inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.thumb img')].every(i => i.naturalWidth > 0)"
    )
    shot(page, "09-generations")
    entry.get_by_role("link").first.click()
    assert page.get_by_test_id("status").inner_text() == "completed"
    assert page.get_by_role("link", name="Download image 2").is_visible()
    shot(page, "10-generation-detail")

    # Phone width: the same pages stay usable.
    page.set_viewport_size(PHONE)
    nav(page, "Playground").click()
    shot(page, "11-playground-phone")
    nav(page, "Dashboard").click()
    shot(page, "12-dashboard-phone")
    page.set_viewport_size({"width": 1280, "height": 800})

    # Settings → Account: the email in the header opens it.
    page.get_by_role("link", name="user@example.test").click()
    assert page.get_by_role("heading", name="Change password").is_visible()
    shot(page, "16-account")

    # Settings → Webhooks: the signing secret, ready to copy.
    nav(page, "Webhooks").click()
    assert page.get_by_test_id("webhook-secret").input_value().startswith("whsec_")
    shot(page, "14-webhooks")

    # Revoke the key: the API answers 401 at once.
    nav(page, "API Keys").click()
    page.get_by_role("button", name="Revoke key laptop").click()
    page.wait_for_url("**/console/settings/keys?done=revoked")
    assert page.get_by_test_id("key").first.get_attribute("class") == "revoked"  # still listed
    shot(page, "13-api-key-revoked")
    status, body = api_status(server, key)
    assert (status, body["type"]) == (401, "unauthorized")

    # Sign out: the console asks to sign in again.
    page.get_by_role("button", name="Sign out").click()
    page.goto(server.url("/console/generations"))
    assert page.url.startswith(server.url("/console/signin"))


def test_pages_are_keyboard_reachable_and_labelled(chromium: Any, server_factory: Any) -> None:
    server = server_factory().start()
    page = chromium.new_page()
    sign_up(page, server, "keyboard@example.test")
    page.goto(server.url("/console/playground"))
    # The first Tab reaches the skip link, which moves focus to the main content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    # Every form control on every page has an accessible name.
    for path in (
        "/console",
        "/console/settings/keys",
        "/console/settings/webhooks",
        "/console/settings/account",
        "/console/playground",
        "/console/generations",
    ):
        page.goto(server.url(path))
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                .map(el => el.id || el.name)"""
        )
        assert unnamed == [], (path, unnamed)
    page.close()
