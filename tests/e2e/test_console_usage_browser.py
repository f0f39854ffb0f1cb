"""Usage in a real browser (Debian's chromium) against a real `bananastand serve`:
the chart's data points, a CSV download that adds up to the balance, the phone
layout, and not one console error or failed request along the way."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Server
from tests.e2e.test_console_browser import PHONE, nav, shot, sign_up
from tests.e2e.test_console_browser import chromium as chromium  # the module's browser

EMAIL = "usage@example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(tmp_path_factory.mktemp("usage-server")).start()
    yield started
    started.stop()


@pytest.fixture
def watched(chromium: Any) -> Iterator[tuple[Any, list[str]]]:
    """A page in a fresh context, and every console error or failed request it meets."""
    context = chromium.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on(
        "response",
        lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    yield page, problems
    context.close()


def generate(server: Server, key: str, model: str, quantity: int) -> None:
    answer = requests.post(
        server.url("/api/v1/generate"),
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": "a quince on a plate", "selectedModel": model, "quantity": quantity},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["success"], answer.text


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], (page.url, width)


def test_usage_charts_exports_and_fits_a_phone(
    server: Server, watched: tuple[Any, list[str]], tmp_path: Path
) -> None:
    page, problems = watched
    sign_up(page, server, EMAIL)
    # The operator records a recharge that unlocks the API; a key, then two models' use.
    recharged = server.cli("admin", "recharge", EMAIL, "1000", "--credits", "30")
    assert recharged.returncode == 0, recharged.stderr
    nav(page, "API Keys").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_test_id("new-key").input_value()
    generate(server, key, "nano-banana", 2)
    generate(server, key, "nano-banana-sketch", 1)

    nav(page, "Usage").click()
    page.wait_for_url("**/console/usage")
    balance = int(page.get_by_test_id("usage-balance").inner_text())
    assert balance == 27
    assert page.get_by_test_id("credits-spent").inner_text() == "3"
    assert page.get_by_test_id("images-made").inner_text() == "3"
    bars = page.get_by_test_id("chart-credits").locator("rect[data-model]")
    models = {bars.nth(n).get_attribute("data-model") for n in range(bars.count())}
    assert models == {"nano-banana", "nano-banana-sketch"}
    assert sum(int(bars.nth(n).get_attribute("data-credits")) for n in range(bars.count())) == 3
    box = bars.first.bounding_box()
    assert box is not None and box["width"] > 1 and box["height"] > 1  # drawn, not just there
    ledger = page.get_by_test_id("ledger-entry")
    assert ledger.count() == 3
    assert int(ledger.first.get_attribute("data-balance")) == balance
    shot(page, "18-usage")

    # The export: a file that parses, one row per entry, adding up to the balance.
    with page.expect_download() as download:
        page.get_by_test_id("export-csv").click()
    assert download.value.suggested_filename.startswith("bananastand-ledger-")
    saved = tmp_path / "ledger.csv"
    download.value.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [r["reason"] for r in rows] == ["recharge", "generation", "generation"]
    assert sum(int(r["amount"]) for r in rows) == balance  # from 0 at sign-up
    assert int(rows[-1]["balance_after"]) == balance

    # A generation link from the ledger opens its page.
    ledger.first.get_by_role("link").click()
    page.wait_for_url("**/console/generations/*")
    page.go_back()

    # The 90-day view; the dashboard's recent activity ends at the same balance.
    page.get_by_role("link", name="Last 90 days").click()
    page.wait_for_url("**/console/usage?days=90")
    assert page.get_by_test_id("chart-images").locator("rect[data-model]").count() == 2
    nav(page, "Dashboard").click()
    assert page.get_by_test_id("balance").inner_text() == str(balance)
    activity = page.get_by_test_id("activity").get_by_test_id("ledger-entry")
    assert int(activity.first.get_attribute("data-balance")) == balance
    page.get_by_role("link", name="All usage →").click()
    page.wait_for_url("**/console/usage")

    # A phone's width: nothing scrolls sideways; the chart still shows its bars.
    page.set_viewport_size(PHONE)
    for path in ("/console/usage", "/console", "/console/settings/keys"):
        page.goto(server.url(path))
        no_sideways_scroll(page)
    page.goto(server.url("/console/usage"))
    chart = page.get_by_test_id("chart-credits")
    chart_box = chart.bounding_box()
    assert chart_box is not None and chart_box["width"] <= PHONE["width"]
    assert chart.locator("rect[data-model]").first.bounding_box()["height"] > 1
    shot(page, "19-usage-phone")

    # API Keys: the revoked key stays listed, greyed, with what it made.
    page.set_viewport_size({"width": 1280, "height": 800})
    page.on("dialog", lambda dialog: dialog.accept())
    nav(page, "API Keys").click()
    page.get_by_role("button", name="Revoke key laptop").click()
    page.wait_for_url("**/console/settings/keys?done=revoked")
    row = page.get_by_test_id("key").first
    assert row.get_attribute("class") == "revoked"
    assert row.get_by_test_id("key-credits").inner_text() == "3"
    assert row.get_by_test_id("key-images").inner_text() == "3"
    assert row.get_by_test_id("key-revoked").inner_text().startswith("Revoked")
    assert "No keys yet" not in page.content()
    shot(page, "20-api-keys-revoked")

    assert problems == []
