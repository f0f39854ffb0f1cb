"""Every console page, in a real browser (Debian's chromium via Playwright) against
a real `bananastand serve`, with an account that has history: each answers 200 with
one heading, shows times in the viewer's zone, fits a 390 px phone without
sideways scrolling, and logs no console error and no failed request."""

from __future__ import annotations

from typing import Any

import requests

from tests.e2e.conftest import Server
from tests.e2e.test_console_admin_browser import Watch, no_sideways_scroll
from tests.e2e.test_console_browser import (
    PHONE,
    chromium,  # noqa: F401 (a fixture)
    setup_code,
    sign_up,
)


def _api_key(page: Any, server: Server) -> str:
    page.goto(server.url("/console/settings/keys"))
    page.get_by_label("Name").fill("crawl")
    page.get_by_role("button", name="Create key").click()
    return str(page.get_by_test_id("new-key").input_value())


def test_every_console_page_is_clean_on_desktop_and_phone(
    chromium: Any,  # noqa: F811
    server_factory: Any,
) -> None:
    server: Server = server_factory(builtin_safety_words='["forbidden"]').start()
    context = chromium.new_context(timezone_id="America/New_York", locale="en-US")
    page = context.new_page()
    watch = Watch(page)
    sign_up(page, server, "crawler@example.test", code=setup_code(server))

    # History to show: a finished generation, a blocked one, a revoked key.
    key = _api_key(page, server)
    made = []
    for prompt in ("a lighthouse at dusk", "something forbidden"):
        answer = requests.post(
            server.url("/api/v1/generate"),
            headers={"Authorization": f"Bearer {key}"},
            json={"prompt": prompt},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        made.append(answer.json()["generationId"])
    page.once("dialog", lambda dialog: dialog.accept())  # "Revoke this key?"
    page.get_by_role("button", name="Revoke").first.click()
    page.wait_for_url("**/settings/keys?done=revoked")
    account_id = server.cli("admin", "list-accounts").stdout.split()[0]

    pages = [
        "/console",
        "/console/playground",
        "/console/generations",
        "/console/generations?status=blocked",
        *(f"/console/generations/{generation}" for generation in made),
        "/console/usage",
        "/console/usage?days=90",
        "/console/settings/keys",
        "/console/settings/account",
        "/console/settings/webhooks",
        "/console/admin/accounts",
        f"/console/admin/accounts/{account_id}",
        "/console/admin/audit",
    ]
    for size in ({"width": 1280, "height": 900}, PHONE):
        page.set_viewport_size(size)
        for path in pages:
            answer = page.goto(server.url(path))
            assert answer is not None and answer.status == 200, (path, answer and answer.status)
            page.wait_for_load_state("networkidle")
            assert page.locator("h1").count() == 1, path
            times = page.locator("time[datetime]")
            if times.count():  # rewritten into local time, the full time on hover
                assert "UTC" not in times.first.inner_text(), path
                assert times.first.get_attribute("title"), path
            if size == PHONE:
                no_sideways_scroll(page)
    assert watch.errors == []

    # An unknown page: the nav for a signed-in user, one heading, a 404.
    answer = page.goto(server.url("/console/no-such-page"))
    assert answer is not None and answer.status == 404
    assert page.get_by_role("navigation", name="Console").is_visible()
    assert page.locator("h1").count() == 1
    no_sideways_scroll(page)
    context.close()
