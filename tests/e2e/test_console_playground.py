"""The playground as a result viewer, in a real browser (Debian's chromium, driven
by Playwright) against real `bananastand serve` processes: images one by one,
seed and elapsed time, rerun, the request as code, the form's limits, failed,
safety-blocked, refused and cancelled runs, the phone layout; and on every page
no console error and no failed request (the stream's included).

Three servers, started once for the module: `good` (built-in renderer taking a
few seconds, with a safety word), `broken` (every image fails) and `slow` (runs
that last long enough to cancel).
"""

from __future__ import annotations

import io
import random
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.e2e.conftest import Server
from tests.e2e.test_console_browser import PHONE, chromium, nav, shot, sign_up

__all__ = ["chromium"]  # the browser fixture, shared with the console's other tests

expect = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra").expect

LATENCY = 3.0  # seconds a `good` run takes, whatever its quantity


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}

    def start(name: str, **settings: Any) -> None:
        started[name] = Server(tmp_path_factory.mktemp(name), **settings).start()

    try:
        start(
            "good",
            builtin_latency_seconds=LATENCY,
            builtin_steps=6,
            builtin_safety_words='["forbidden"]',
        )
        start("broken", builtin_failure_rate=1.0, builtin_latency_seconds=0.5)
        start("slow", builtin_latency_seconds=120)
        start("flaky", builtin_failure_rate=0.5, builtin_latency_seconds=0.5)
        yield started
    finally:
        for server in started.values():
            server.stop()


class Watched:
    """A signed-in page whose console errors and failed requests are collected."""

    def __init__(self, browser: Any, server: Server, credits: int) -> None:
        self.server = server
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.posts: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        self.page.on(
            "request",
            lambda r: self.posts.append(r.url) if r.method in ("POST", "DELETE") else None,
        )
        self.email = f"play-{secrets.token_hex(4)}@example.test"
        sign_up(self.page, server, self.email)
        if credits:
            granted = server.cli("admin", "grant", self.email, str(credits), "--reason", "test")
            assert granted.returncode == 0, granted.stderr
        self.page.goto(server.url("/console/playground"))
        self.posts.clear()  # from here: what the playground sends

    def clean(self, *, allowed: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.errors if not any(a in e for a in allowed)]
        assert errors == [], errors
        assert self.failed == [], self.failed
        self.context.close()

    def generate(self, prompt: str, quantity: int = 1) -> None:
        self.page.get_by_label("Prompt").fill(prompt)
        self.page.get_by_label("Quantity").fill(str(quantity))
        self.page.get_by_role("button", name="Generate").click()


def balance(page: Any) -> str:
    return str(page.get_by_test_id("balance").inner_text())


def code(page: Any, name: str) -> str:
    """The text of one "View code" snippet."""
    return str(page.get_by_role("textbox", name=name, exact=True).input_value())


def done(page: Any) -> None:
    """Wait for the run to end (the Rerun button comes with its end)."""
    expect(page.get_by_role("button", name="Rerun with the same settings")).to_be_visible(
        timeout=30_000
    )


def test_images_come_one_by_one_with_seed_elapsed_rerun_and_code(
    chromium: Any, servers: dict[str, Server]
) -> None:
    server = servers["good"]
    user = Watched(chromium, server, credits=20)
    page = user.page
    # Each image's arrival, as the page saw it: how many, the bar, still running?
    page.evaluate(
        """() => {
            window.arrivals = [];
            const images = document.getElementById('images');
            new MutationObserver(() => window.arrivals.push({
                count: images.querySelectorAll('figure').length,
                progress: document.getElementById('progress').value,
                running: !document.getElementById('cancel').hidden,
            })).observe(images, {childList: true});
        }"""
    )
    page.get_by_label("Seed").fill("4242")
    user.generate("Three koi in a pond", quantity=3)
    done(page)
    arrivals = page.evaluate("window.arrivals")
    added = [a for a in arrivals if a["count"] > 0]
    assert [a["count"] for a in added] == [1, 2, 3], arrivals
    assert added[0]["running"] and added[1]["running"], arrivals  # before the end
    assert 30 <= added[0]["progress"] < 40, arrivals  # image 1 of 3 at about a third
    expect(page.locator("#progress")).to_have_attribute("value", "100")
    expect(page.get_by_test_id("seed")).to_have_text("4242")
    elapsed = page.get_by_test_id("elapsed").inner_text()
    assert re.fullmatch(r"\d+\.\d s", elapsed) and float(elapsed[:-2]) >= LATENCY * 0.8, elapsed
    expect(page.get_by_test_id("credits")).to_have_text("3 credits used")
    assert balance(page) == "17"
    figures = page.locator("#images figure")
    expect(figures).to_have_count(3)
    first = figures.first
    assert first.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    assert first.locator("img").evaluate("img => img.getBoundingClientRect().width") > 300
    download = first.get_by_role("link", name="Download image 1")
    assert re.fullmatch(r"\w+_0\.png", download.get_attribute("download") or "")
    url = first.locator("img").get_attribute("src") or ""
    assert url.startswith(server.url("/images/"))
    first.get_by_role("button", name="Copy the URL of image 1").click()
    expect(first.get_by_role("status")).to_have_text("URL copied.")
    shot(page, "20-playground-three-images")

    # The same request as code: base URL filled in, the key a placeholder.
    page.get_by_text("View code").click()
    curl = code(page, "curl")
    assert f"curl -sN '{server.base_url}/api/v1/generate'" in curl
    assert "Authorization: Bearer $BANANASTAND_API_KEY" in curl
    assert '"quantity":3' in curl and '"seed":4242' in curl and '"mode":"stream"' in curl
    python = code(page, "Python (bananastand client)")
    assert f'Client("{server.base_url}", api_key=os.environ["BANANASTAND_API_KEY"])' in python
    assert 'nb.generate("Three koi in a pond", model="nano-banana", quantity=3, seed=4242)' in (
        python
    )
    openai = code(page, "Python (OpenAI SDK)")
    assert f'base_url="{server.base_url}/v1"' in openai and "n=3" in openai
    assert "nb_" not in curl + python + openai
    page.get_by_label("Aspect ratio").select_option("16:9")
    assert '"aspectRatio":"16:9"' in code(page, "curl")
    assert 'size="1792x1024"' in code(page, "Python (OpenAI SDK)")
    page.get_by_label("Aspect ratio").select_option("default")
    shot(page, "21-playground-code")

    # "Use as reference" puts the image's URL into the reference field.
    first.get_by_role("button", name="Use image 1 as a reference").click()
    expect(page.get_by_label("Or image URLs, one per line")).to_have_value(url)
    expect(page.locator("#cost")).to_have_text("3")  # still 1 reference: no extra
    page.get_by_label("Or image URLs, one per line").fill("")

    # Rerun: the same settings and seed, so the same pictures.
    page.get_by_label("Seed").fill("")
    page.get_by_label("Quantity").fill("1")
    page.get_by_role("button", name="Rerun with the same settings").click()
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    done(page)
    expect(page.get_by_test_id("seed")).to_have_text("4242")
    expect(page.locator("#images figure")).to_have_count(3)
    assert page.get_by_label("Quantity").input_value() == "3"
    again = page.locator("#images img").first.get_attribute("src") or ""
    assert again != url
    assert requests.get(again, timeout=10).content == requests.get(url, timeout=10).content
    assert balance(page) == "14"

    # An image of this server used as a reference: read from its own storage,
    # though the server is on a local address the fetcher refuses to call.
    figures.first.get_by_role("button", name="Use image 1 as a reference").click()
    expect(page.get_by_label("Or image URLs, one per line")).to_have_value(again)
    page.get_by_label("Quantity").fill("1")
    page.get_by_role("button", name="Generate").click()
    done(page)
    expect(page.locator("#progress")).to_have_attribute("value", "100")
    expect(page.locator("#images figure")).to_have_count(1)
    expect(page.get_by_role("alert").filter(has_text="Not sent")).to_have_count(0)
    user.clean()


def test_the_form_enforces_the_limits_and_sends_nothing(
    chromium: Any, servers: dict[str, Server]
) -> None:
    user = Watched(chromium, servers["good"], credits=5)
    page = user.page
    page.get_by_label("Prompt").fill("Nine bananas")
    quantity = page.get_by_label("Quantity")
    quantity.fill("9")
    error = page.locator("#quantity-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("at most 4 images per run; you asked for 9")
    expect(quantity).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#cost")).to_have_text("—")
    page.get_by_role("button", name="Generate").click()
    expect(quantity).to_be_focused()
    assert quantity.input_value() == "9"  # not silently made 4
    # A streaming model makes one image per call and takes no references.
    page.get_by_label("Model").select_option("nano-banana-sketch")
    quantity.fill("2")
    expect(error).to_contain_text("at most 1 image per run")
    expect(page.get_by_label("Or image URLs, one per line")).to_be_disabled()
    page.get_by_label("Model").select_option("nano-banana")
    page.get_by_label("Or image URLs, one per line").fill("ftp://example.test/a.png")
    quantity.fill("1")
    expect(page.locator("#references-error")).to_contain_text("Not an http(s)")
    page.get_by_label("Prompt").fill("")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#prompt-error")).to_have_text("Write a prompt first.")
    assert user.posts == [], user.posts  # nothing was sent
    assert balance(page) == "5"
    shot(page, "22-playground-limits")
    user.clean()


def test_failed_blocked_and_refused_runs_show_as_errors(
    chromium: Any, servers: dict[str, Server]
) -> None:
    broken = Watched(chromium, servers["broken"], credits=5)
    page = broken.page
    broken.generate("A kite that will not fly", quantity=2)
    alert = page.get_by_role("alert").filter(has_text="Generation failed")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("simulated failure")
    expect(alert).to_contain_text("Refunded: 2 credits.")
    expect(alert).to_have_class(re.compile(r"\berror\b"))
    bar = page.locator("#progress")
    expect(bar).to_have_class(re.compile(r"\bfailed\b"))
    assert int(bar.get_attribute("value") or "0") < 100
    # What is drawn: the filled part of the bar in the error colour (#a3211b).
    with Image.open(io.BytesIO(bar.screenshot())) as drawn:
        colour = drawn.convert("RGB").getpixel((4, drawn.height // 2))
    assert colour == (163, 33, 27), colour
    expect(page.locator("#progress-label")).to_contain_text("stopped at")
    assert balance(page) == "5"
    shot(page, "23-playground-failed")
    broken.clean()

    good = Watched(chromium, servers["good"], credits=5)
    page = good.page
    good.generate("Something forbidden")
    alert = page.get_by_role("alert").filter(has_text="Blocked by the safety check")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Content safety check failed")
    expect(alert).to_contain_text("Charged:")
    expect(page.locator("#progress")).to_have_class(re.compile(r"\bfailed\b"))
    assert int(page.locator("#progress").get_attribute("value") or "0") < 100
    shot(page, "24-playground-blocked")

    # A refusal before the stream (a reference the server cannot fetch): bar and
    # label back to their start, the reason shown, nothing charged.
    before = balance(page)
    page.get_by_label("Or image URLs, one per line").fill("http://127.0.0.1:9/ref.png")
    page.get_by_role("button", name="Generate").click()
    alert = page.get_by_role("alert").filter(has_text="Not sent")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Nothing was charged.")
    expect(page.locator("#progress-label")).to_have_text("Progress: not started")
    expect(page.locator("#progress")).to_have_attribute("value", "0")
    expect(page.locator("#progress")).not_to_have_class(re.compile(r"\bfailed\b"))
    assert balance(page) == before
    # The browser reports the 400 answer itself; nothing else may be logged.
    good.clean(allowed=("status of 400",))


def test_a_partly_made_run_shows_what_failed_and_what_was_refunded(
    chromium: Any, servers: dict[str, Server]
) -> None:
    user = Watched(chromium, servers["flaky"], credits=5)
    page = user.page

    # The built-in renderer fails image i of a run when this draw is under its rate.
    def draw(seed: int, index: int) -> float:
        return random.Random(f"{seed + index}:{index}").random()

    seed = next(s for s in range(1000) if draw(s, 0) >= 0.5 > draw(s, 1))
    page.get_by_label("Seed").fill(str(seed))  # image 1 is made, image 2 is not
    user.generate("Two kites", quantity=2)
    alert = page.get_by_role("alert").filter(has_text="1 image not made")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Refunded: 1 credit.")
    expect(alert).to_contain_text("Charged: 1 credit.")
    bar = page.locator("#progress")
    expect(bar).to_have_class(re.compile(r"\bfailed\b"))  # never a full blue bar
    expect(page.locator("#progress-label")).to_have_text("Progress: done, 1 of 2 images made")
    expect(page.locator("#images figure")).to_have_count(1)
    expect(page.get_by_test_id("balance")).to_have_text("4")
    shot(page, "25-playground-partly-made")
    user.clean()


def test_cancel_while_running_refunds(chromium: Any, servers: dict[str, Server]) -> None:
    user = Watched(chromium, servers["slow"], credits=5)
    page = user.page
    user.generate("A very slow sunrise", quantity=2)
    expect(page.locator("#message")).to_have_text("Processing...")  # it runs
    expect(page.get_by_test_id("balance")).to_have_text("3")  # charged up front
    page.get_by_role("button", name="Cancel").click()
    alert = page.get_by_role("alert").filter(has_text="Generation failed")
    expect(alert).to_contain_text("Cancelled")
    expect(alert).to_contain_text("Refunded: 2 credits.")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(page.get_by_test_id("balance")).to_have_text("5")
    assert int(page.locator("#progress").get_attribute("value") or "0") < 100
    shot(page, "25-playground-cancelled")
    user.clean()


def test_phone_layout_and_every_page_is_clean(chromium: Any, servers: dict[str, Server]) -> None:
    server = servers["good"]
    user = Watched(chromium, server, credits=5)
    page = user.page
    page.set_viewport_size(PHONE)
    page.get_by_text("View code").click()
    user.generate("A phone-sized banana", quantity=2)
    done(page)
    expect(page.locator("#images figure")).to_have_count(2)
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, overflow
    image_box = page.locator("#images img").first.bounding_box()
    assert image_box and image_box["x"] >= 0 and image_box["x"] + image_box["width"] <= 390
    shot(page, "26-playground-phone")
    for name in ("Playground", "Dashboard", "API Keys", "Webhooks", "Generations"):
        nav(page, name).click()
        expect(page.locator("h1")).to_be_visible()
    page.locator("[data-testid=generation] a").first.click()
    expect(page.get_by_test_id("status")).to_have_text("completed")
    user.clean()


def test_the_playground_shows_live_previews(
    chromium: Any, server_factory: Any, tmp_path: Path
) -> None:
    from tests.fakes.openai_server import FakeOpenAI
    from tests.providers.test_openai import KEY, LIVE, write_catalog

    with FakeOpenAI(api_key=KEY) as fake:
        server = server_factory(
            catalog_path=write_catalog(tmp_path),
            openai_api_key=KEY,
            openai_base_url=fake.url + "/v1",
        ).start()
        user = Watched(chromium, server, credits=20)
        page = user.page
        page.get_by_label("Prompt").fill("A red kite")
        page.get_by_label("Model").select_option(LIVE)
        page.evaluate(
            """() => {
                window.previews = [];
                const img = document.getElementById('preview');
                new MutationObserver(() => window.previews.push(img.src))
                    .observe(img, {attributes: true, attributeFilter: ['src']});
            }"""
        )
        page.get_by_role("button", name="Generate").click()
        page.locator("#images img").first.wait_for()
        previews = page.evaluate("window.previews")
        assert len(previews) == 2, previews  # partialImages = 2 in the catalogue
        assert all(src.startswith("data:image/") for src in previews)
        assert page.locator("#preview").is_hidden()  # replaced by the result
        shot(page, "15-playground-previews")
        user.clean()
