"""The history and generation pages in a real browser (Debian's chromium) against
a real `bananastand serve`: small thumbnails, filters, a blocked generation, a
running one that updates itself, the detail page, the 390 px layout, and not
one console error or failed request on the way."""

from __future__ import annotations

import json
from typing import Any

import requests

from tests.e2e.conftest import Server
from tests.e2e.test_console_browser import PHONE, chromium, nav, shot, sign_up

__all__ = ["chromium"]  # the module-scoped browser fixture, shared

EMAIL = "history@example.test"


class Watch:
    """Everything a page complains about: console errors, failed requests, and
    answers with an error status."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on(
            "requestfailed",
            lambda r: self.problems.append(f"failed: {r.url} {r.failure}"),
        )
        page.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"{r.status}: {r.url}"),
        )


def api_key(server: Server) -> str:
    """API access, credits and a key for the account signed up in the browser."""
    for args in (
        ("admin", "api-access", EMAIL, "on"),
        ("admin", "grant", EMAIL, "20", "--reason", "test"),
    ):
        done = server.cli(*args)
        assert done.returncode == 0, done.stderr
    made = server.cli("admin", "create-key", EMAIL, "--name", "history")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def generate(server: Server, key: str, **body: Any) -> dict[str, Any]:
    answer = requests.post(
        server.url("/api/v1/generate"),
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def fits_the_phone(page: Any) -> None:
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide"
    page.set_viewport_size({"width": 1280, "height": 800})


def test_history_and_detail_pages(chromium: Any, server_factory: Any) -> None:
    server = server_factory(
        builtin_latency_seconds=2.5, builtin_steps=5, builtin_safety_words='["forbidden"]'
    ).start()
    page = chromium.new_page()
    watch = Watch(page)
    sign_up(page, server, EMAIL)
    key = api_key(server)
    square = generate(server, key, prompt="A square harbour at dawn", aspectRatio="1:1", quantity=2)
    blocked = generate(server, key, prompt="Something forbidden")
    assert blocked["warning"] is True

    # A generation running in the background: the list updates itself when it ends.
    running = generate(server, key, prompt="A slow lighthouse", mode="async")["generationId"]
    nav(page, "Generations").click()
    row = page.locator(f'[data-id="{running}"]')
    assert row.get_attribute("data-status") == "processing"
    assert row.get_by_test_id("status").inner_text() == "processing"
    page.wait_for_selector(f'[data-id="{running}"][data-status="completed"]', timeout=20_000)
    assert page.locator(f'[data-id="{running}"] .thumb img').count() == 1

    # Thumbnails: every one loaded, 256 px, each a few KB rather than the image's ~150.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.thumb img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    thumbs = page.evaluate(
        """() => performance.getEntriesByType('resource')
            .filter(e => e.name.includes('size=thumb'))
            .map(e => ({url: e.name, bytes: e.decodedBodySize}))"""
    )
    assert len(thumbs) == 2, thumbs  # the two finished generations with images
    assert all(0 < t["bytes"] < 20_000 for t in thumbs), thumbs
    square_row = page.locator(f'[data-id="{square["generationId"]}"]')
    assert square_row.locator(".thumb img").evaluate("i => i.naturalWidth") == 256
    full = requests.get(square["imageUrls"][0], timeout=10)
    assert len(full.content) > 5 * max(t["bytes"] for t in thumbs)

    # Blocked says so: never a green "completed · 0 images".
    blocked_row = page.locator(f'[data-id="{blocked["generationId"]}"]')
    assert blocked_row.get_by_test_id("status").inner_text() == "blocked"
    assert "0 images" not in blocked_row.inner_text()
    colour = blocked_row.get_by_test_id("status").evaluate("s => getComputedStyle(s).color")
    assert colour != square_row.get_by_test_id("status").evaluate("s => getComputedStyle(s).color")
    shot(page, "20-generations-history")
    fits_the_phone(page)

    # Filters narrow the list and show what they are set to.
    page.get_by_label("Status").select_option("blocked")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/console/generations?status=blocked*")
    assert page.get_by_test_id("generation").count() == 1
    assert page.get_by_test_id("generation").get_attribute("data-id") == blocked["generationId"]
    page.get_by_label("Status").select_option("")
    page.get_by_label("From (UTC)").fill("2030-01-01")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_test_id("generation").count() == 0
    assert page.get_by_text("No generations match these filters.").is_visible()
    page.get_by_role("link", name="Clear filters").click()
    assert page.get_by_test_id("generation").count() == 3

    # The detail page: large images, the facts, and the API's JSON answer.
    page.locator(f'[data-id="{square["generationId"]}"] .prompt a').click()
    assert page.get_by_test_id("status").inner_text() == "completed"
    images = page.locator(".images img")
    assert images.count() == 2
    images.first.evaluate("i => i.decode()")
    assert images.first.evaluate("i => i.naturalWidth") == 1024
    assert images.first.evaluate("i => i.clientWidth") >= 600  # a useful size
    assert page.get_by_role("link", name="Download image 2").is_visible()
    assert page.get_by_test_id("quantity").inner_text() == "2"
    assert page.get_by_test_id("seed").inner_text().isdigit()
    shown = json.loads(page.get_by_test_id("json").inner_text())
    polled = requests.get(
        server.url("/api/v1/generate"),
        params={"id": square["generationId"]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).json()
    assert shown == polled
    shot(page, "21-generation-detail")
    fits_the_phone(page)

    page.goto(server.url(f"/console/generations/{blocked['generationId']}"))
    assert page.get_by_test_id("blocked").is_visible()
    assert "charged in full" in page.get_by_test_id("blocked").inner_text()

    # A running generation's own page ends by itself, too.
    other = generate(server, key, prompt="Another slow one", mode="async")["generationId"]
    page.goto(server.url(f"/console/generations/{other}"))
    assert page.get_by_test_id("status").inner_text() == "processing"
    page.wait_for_function(
        "() => document.querySelector('[data-testid=status]')?.textContent === 'completed'",
        timeout=20_000,
    )
    assert page.locator(".images img").count() == 1
    fits_the_phone(page)

    assert watch.problems == []
    page.close()
