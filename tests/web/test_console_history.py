"""The history and generation pages: thumbnails, filters kept across pages,
blocked generations named so, the detail page's facts and JSON answer, and the
JSON a page in progress polls."""

from __future__ import annotations

import html
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import Image
from sqlalchemy import update

from bananastand import thumbnails
from bananastand.db.models import Generation
from bananastand.generations import NewGeneration
from bananastand.ids import new_id
from bananastand.providers.base import SAFETY_MESSAGE
from bananastand.storage import thumb_key
from tests.support import Api, data_url, png_bytes
from tests.web.conftest import Browser
from tests.web.test_console_pages import create_key, enabled

THUMB_IMG = re.compile(
    r'<img src="([^"]+\?size=thumb)" width="(\d+)" height="(\d+)" alt="" loading="lazy">'
)


def ids_on(page: str) -> list[str]:
    return re.findall(r'data-testid="generation" data-id="([^"]+)"', page)


async def record(
    api: Api,
    browser: Browser,
    *,
    model: str = "nano-banana",
    prompt: str = "made directly",
    error: str | None = None,
    warning: str | None = None,
    created: datetime | None = None,
    settle: bool = True,
    references: tuple[str, ...] = (),
) -> str:
    """A generation admitted (and, with `settle`, failed with `error`) through the
    domain, the way the API's runs do (`warning`: blocked by a safety verdict);
    `created` backdates it."""
    account = await browser.account(api)
    generations = api.services.generation.generations
    new = NewGeneration(
        id=new_id(),
        account_id=account.id,
        api_key_id=None,
        prompt=prompt,
        model=model,
        mode="async",
        aspect_ratio="default",
        quantity=1,
        reference_urls=list(references),
        seed=7,
        unit_cost=1,
    )
    await api.services.billing.grant(account.id, 1, reason="test")
    await generations.admit(new, default_limit=100, queue_size=None, queue_workers=1)
    if settle:
        if warning is not None:  # a provider's safety verdict
            await generations.settle(new.id, warning=warning, image_ttl=timedelta(days=1))
        else:
            await generations.settle(new.id, error=error or "it broke", image_ttl=timedelta(days=1))
    if created is not None:
        await api.services.db.write(
            lambda tx: tx.session.execute(
                update(Generation).where(Generation.id == new.id).values(created_at=created)
            )
        )
    return new.id


async def test_history_shows_small_signed_thumbnails_not_the_images(
    api: Api, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    await enabled(api, user)
    key = await create_key(user)
    made = await api.client.post(
        "/api/v1/generate",
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": "a square harbour", "aspectRatio": "1:1", "quantity": 2},
    )
    image_urls = made.json()["imageUrls"]
    image_id = image_urls[0].rsplit("/", 1)[1].split(".")[0]
    storage = api.services.generation.storage
    assert storage.path(thumb_key(image_id)) is None  # not made with the image
    page = await user.get("/console/generations")
    # Made with the page, so the browser's request finds it (a click elsewhere
    # while it was being made would have cut that request short).
    assert storage.path(thumb_key(image_id)) is not None
    found = THUMB_IMG.findall(page.text)
    assert len(found) == 1  # one per generation
    src, width, height = found[0]
    src = html.unescape(src)
    assert src == image_urls[0] + "?size=thumb"
    assert (width, height) == ("256", "256")
    for url in image_urls:
        assert f'src="{url}"' not in page.text  # never the full image in the list
    thumb = await api.download(src)
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == thumbnails.MIME
    assert len(thumb.content) < 20_000
    with Image.open(io.BytesIO(thumb.content)) as picture:
        assert picture.size == (256, 256)
    # The thumbnail URL is exactly as forgeable as the image's: not at all.
    base, expires, signature, filename = src.rsplit("/", 3)
    stretched = f"{base}/{int(expires) + 86400}/{signature}/{filename}"
    assert (await api.download(stretched)).status_code == 404


async def test_filters_narrow_the_list_and_stay_on_the_older_link(
    api: Api, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    await enabled(api, user, credits=100)
    key = await create_key(user)
    for number in range(22):
        answer = await api.client.post(
            "/api/v1/generate",
            headers={"Authorization": f"Bearer {key}"},
            json={"prompt": f"picture number {number:02d}"},
        )
        assert answer.status_code == 200
    failed = [await record(api, user, prompt=f"broken {n}") for n in range(3)]
    other_model = await record(api, user, model="nano-banana-2", prompt="elsewhere")
    running = await record(api, user, prompt="still going", settle=False)

    only_failed = await user.get("/console/generations?status=failed")
    assert only_failed.status_code == 200
    assert sorted(ids_on(only_failed.text)) == sorted([*failed, other_model])
    assert 'option value="failed" selected' in only_failed.text

    processing = await user.get("/console/generations?status=processing")
    assert ids_on(processing.text) == [running]
    assert f'data-poll="/console/generations/{running}.json"' in processing.text

    by_model = await user.get("/console/generations?model=nano-banana-2")
    assert ids_on(by_model.text) == [other_model]

    completed = await user.get("/console/generations?status=completed&model=nano-banana")
    assert len(ids_on(completed.text)) == 20
    assert "broken" not in completed.text and "still going" not in completed.text
    older = re.search(r'href="([^"]+)" rel="next"', completed.text)
    assert older
    link = html.unescape(older.group(1))
    assert "status=completed" in link and "model=nano-banana" in link and "before=" in link
    second = await user.get(link)
    assert sorted(re.findall(r"picture number (\d\d)", second.text))[::2] == ["00", "01"]
    assert len(ids_on(second.text)) == 2
    newest = re.search(r'<a href="([^"]+)">Newest</a>', second.text)
    assert newest and "status=completed" in html.unescape(newest.group(1))


async def test_dates_filter_by_utc_day_inclusive(api: Api, browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    day = datetime(2025, 3, 10, tzinfo=UTC)
    before = await record(api, user, created=day - timedelta(seconds=1))
    first = await record(api, user, created=day)
    last = await record(api, user, created=day + timedelta(hours=23, minutes=59))
    after = await record(api, user, created=day + timedelta(days=1))

    that_day = await user.get("/console/generations?from=2025-03-10&to=2025-03-10")
    assert ids_on(that_day.text) == [last, first]
    since = await user.get("/console/generations?from=2025-03-10")
    assert ids_on(since.text) == [after, last, first]
    until = await user.get("/console/generations?to=2025-03-09")
    assert ids_on(until.text) == [before]
    none = await user.get("/console/generations?from=2030-01-01")
    assert ids_on(none.text) == []
    assert "No generations match these filters." in none.text


async def test_bad_filters_are_explained_not_a_server_error(browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    for query, message in (
        ("status=done", "The status must be one of: processing, completed, failed, blocked."),
        ("model=no-such-model", "There is no model named “no-such-model”."),
        ("from=2025-13-45", "The from date must be a date like 2025-01-31."),
        ("to=yesterday", "The to date must be a date like 2025-01-31."),
        ("from=2025-02-02&to=2025-02-01", "The from date is after the to date."),
    ):
        answer = await user.get(f"/console/generations?{query}")
        assert answer.status_code == 400, query
        assert f'role="alert">{html.escape(message, quote=False)}</p>' in answer.text, query
        assert 'name="status"' in answer.text  # the form is there to fix it


async def test_a_safety_blocked_generation_says_so(api: Api, browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    generation_id = await record(api, user, prompt="a forbidden thing", warning=SAFETY_MESSAGE)
    await record(api, user, prompt="plain failure")

    page = await user.get("/console/generations")
    row = page.text.split(f'data-id="{generation_id}"', 1)[1].split("</li>", 1)[0]
    assert 'data-status="blocked"' in page.text
    assert '<span class="status blocked" data-testid="status">blocked</span>' in row
    assert "completed" not in row and "0 images" not in row
    assert "1 credit charged · nothing refunded" in row

    detail = await user.get(f"/console/generations/{generation_id}")
    assert ">blocked</span>" in detail.text
    assert "Blocked by the safety check: Content safety check failed." in detail.text
    assert "1 credit charged (a safety verdict is charged in full)" in detail.text

    assert ids_on((await user.get("/console/generations?status=blocked")).text) == [generation_id]
    assert ids_on((await user.get("/console/generations?status=completed")).text) == []


async def test_detail_shows_images_facts_references_and_the_api_answer(
    api: Api, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    await enabled(api, user, credits=10)
    key = await create_key(user)
    bearer = {"Authorization": f"Bearer {key}"}
    made = await api.client.post(
        "/api/v1/generate",
        headers=bearer,
        json={
            "prompt": "a lighthouse",
            "aspectRatio": "16:9",
            "quantity": 2,
            "referenceImageUrls": [data_url(png_bytes())],
        },
    )
    assert made.status_code == 200, made.text
    generation_id = made.json()["generationId"]
    stored = await api.services.generation.generations.get(generation_id)
    detail = await user.get(f"/console/generations/{generation_id}")
    assert detail.status_code == 200
    text = detail.text
    for url in made.json()["imageUrls"]:
        image = stored.images[made.json()["imageUrls"].index(url)]
        assert f'<img src="{url}" width="{image.width}" height="{image.height}"' in text
    assert "Download image 2" in text
    assert f'data-testid="seed"><code>{stored.seed}</code>' in text
    assert 'data-testid="quantity">2</dd>' in text
    assert "<dd>16:9</dd>" in text
    assert "An uploaded image (image/png), not kept" in text
    assert "data-poll" not in text  # it has ended: nothing to refresh

    pre = re.search(r'<pre class="json" data-testid="json" tabindex="0">(.*?)</pre>', text, re.S)
    assert pre
    polled = await api.client.get("/api/v1/generate", params={"id": generation_id}, headers=bearer)
    assert json.loads(html.unescape(pre.group(1))) == polled.json()
    console_json = await user.get(f"/console/generations/{generation_id}.json")
    assert console_json.json() == polled.json()
    assert console_json.headers["cache-control"] == "no-store"


async def test_an_http_reference_is_a_link(api: Api, browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    generation_id = await record(
        api, user, references=("https://pictures.example.test/cat.png", "data:image/webp,…")
    )
    detail = await user.get(f"/console/generations/{generation_id}")
    assert (
        '<a href="https://pictures.example.test/cat.png" rel="noopener noreferrer">'
        "https://pictures.example.test/cat.png</a>"
    ) in detail.text
    assert "An uploaded image (image/webp), not kept" in detail.text


async def test_a_running_generation_points_its_page_at_its_json(
    api: Api, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    mallory = await browser_factory.signed_up()
    running = await record(api, user, prompt="in progress", settle=False)
    detail = await user.get(f"/console/generations/{running}")
    assert f'data-poll="/console/generations/{running}.json"' in detail.text
    assert '<script src="/console/static/generation.js" defer></script>' in detail.text
    polled = await user.get(f"/console/generations/{running}.json")
    assert polled.json()["data"]["processingStatus"] == "processing"
    assert (await mallory.get(f"/console/generations/{running}.json")).status_code == 404
    await api.services.generation.generations.settle(
        running, error="it broke", image_ttl=timedelta(days=1)
    )
    ended = await user.get(f"/console/generations/{running}.json")
    assert ended.json()["data"]["processingStatus"] == "failed"
    assert "data-poll" not in (await user.get(f"/console/generations/{running}")).text
    script = await user.get("/console/static/generation.js")
    assert script.status_code == 200 and "data-poll" in script.text
