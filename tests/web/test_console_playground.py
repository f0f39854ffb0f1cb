"""The playground's endpoints over ASGI: its stream (headers, each image as soon
as it is done, the seed), and cancelling a run from the console."""

from __future__ import annotations

import re
from contextlib import aclosing
from typing import Any

from bananastand.accounts import AccountInfo, Caller
from bananastand.validation import GenerateParams
from tests.support import BOTH_DEPLOYMENTS, Api, parse_sse
from tests.web.conftest import Browser


async def page_token(browser: Browser) -> str:
    page = await browser.get("/console/playground")
    assert page.status_code == 200
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match
    return match.group(1)


async def funded(api: Api, browser: Browser, credits: int) -> str:
    account = await browser.account(api)
    await api.services.billing.grant(account.id, credits, reason="test")
    return account.id


async def test_the_stream_keeps_its_own_cache_control(api: Api, browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    await funded(api, user, 5)
    token = await page_token(user)
    answer = await user.client.post(
        "/console/playground/generate",
        json={"prompt": "a lighthouse"},
        headers={"X-CSRF-Token": token},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    # The stream's own header, once, not replaced by the pages' no-store.
    assert answer.headers.get_list("cache-control") == ["no-cache"]
    assert answer.headers["x-accel-buffering"] == "no"
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    page = await user.get("/console/playground")
    assert page.headers.get_list("cache-control") == ["no-store"]


@BOTH_DEPLOYMENTS
async def test_each_image_comes_as_soon_as_it_is_done_to_the_console_only(
    api: Api, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    await funded(api, user, 10)
    token = await page_token(user)
    answer = await user.client.post(
        "/console/playground/generate",
        json={"prompt": "three koi", "quantity": 3, "seed": 1234},
        headers={"X-CSRF-Token": token},
    )
    assert answer.status_code == 200
    assert answer.headers["x-generation-seed"] == "1234"
    assert answer.headers["x-credits-charged"] == "3"
    events, _ = parse_sse(answer.text)
    done = [e for e in events if (e.get("data") or {}).get("imageUrl")]
    assert [e["data"]["imageIndex"] for e in done] == [0, 1, 2]
    assert [e["message"] for e in done] == [f"Image {n} of 3 done" for n in (1, 2, 3)]
    # Image 1 at about a third of the way, each before the final event.
    assert 30 <= done[0]["progress"] < 40
    assert events.index(done[-1]) < len(events) - 1
    final = events[-1]
    assert final["type"] == "complete" and len(final["data"]["imageUrls"]) == 3
    record = await api.services.generation.generations.get(final["data"]["generationId"])
    assert record.seed == 1234
    for event in done:  # the early URL serves the very image the record keeps
        path = event["data"]["imageUrl"].removeprefix("https://images.example.test")
        image = await api.client.get(path)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    early_ids = [e["data"]["imageUrl"].rsplit("/", 1)[1] for e in done]
    assert early_ids == [url.rsplit("/", 1)[1] for url in final["data"]["imageUrls"]]

    # The API's stream of the same kind of run: exactly the contract's events.
    key = await api.account(credits=10)
    streamed = await api.generate(key, prompt="three koi", quantity=3, mode="stream")
    api_events, _ = parse_sse(streamed.text)
    assert api_events[-1]["type"] == "complete"
    assert '"imageUrl"' not in streamed.text and "finishedImage" not in streamed.text
    assert [e for e in api_events if e["type"] == "status" and "data" in e] == []
    assert not any("done" in e["message"] for e in api_events)


async def test_cancel_refunds_a_running_generation_of_the_account_only(
    api: Api, browser_factory: Any
) -> None:
    builtin = api.services.generation.providers["builtin"]
    builtin.latency_seconds = 30.0  # type: ignore[attr-defined]  # a run that waits
    owner = await browser_factory.signed_up()
    other = await browser_factory.signed_up()
    owner_id = await funded(api, owner, 10)
    await funded(api, other, 10)
    account = await owner.account(api)
    submission = await api.services.generation.submit(
        Caller(account=AccountInfo.of(account), key_id=None),
        GenerateParams(prompt="slow", quantity=2, mode="stream"),
    )
    generation_id = submission.record.id
    assert await api.services.billing.balance(owner_id) == 8
    url = f"/console/playground/generate?id={generation_id}"

    # Another account: not found (never "exists"); nothing changes.
    refused = await other.client.delete(url, headers={"X-CSRF-Token": await page_token(other)})
    assert refused.status_code == 404
    assert refused.json()["type"] == "not_found"
    # The owner without the CSRF header: refused.
    forged = await owner.client.delete(url)
    assert forged.status_code == 403
    assert (await api.services.generation.generations.get(generation_id)).state == "running"

    token = await page_token(owner)
    answer = await owner.client.delete(url, headers={"X-CSRF-Token": token})
    assert answer.status_code == 200
    assert answer.json() == {
        "success": True,
        "message": "Cancelled",
        "generationId": generation_id,
        "creditsUsed": 0,
        "refunded": 2,
        "remainingCredits": 10,
    }
    assert await api.services.billing.balance(owner_id) == 10
    again = await owner.client.delete(url, headers={"X-CSRF-Token": token})
    assert again.json()["success"] is False and again.json()["refunded"] == 2
    assert await api.services.billing.balance(owner_id) == 10

    missing = await owner.client.delete(
        "/console/playground/generate", headers={"X-CSRF-Token": token}
    )
    assert missing.status_code == 400 and missing.json()["type"] == "invalid_request"


async def test_an_image_shown_before_a_cancel_is_not_kept(api: Api, browser_factory: Any) -> None:
    service = api.services.generation
    builtin = service.providers["builtin"]
    builtin.latency_seconds = 6.0  # type: ignore[attr-defined]  # image 1 of 2 at ~3 s
    owner = await browser_factory.signed_up()
    owner_id = await funded(api, owner, 10)
    account = await owner.account(api)
    submission = await service.submit(
        Caller(account=AccountInfo.of(account), key_id=None),
        GenerateParams(prompt="a slow pair", quantity=2, mode="stream"),
    )
    generation_id = submission.record.id
    shown = None
    events = service.follow(generation_id, idle_timeout=1.0, finished_images=True)
    async with aclosing(events):
        async for item in events:
            if item is not None and (url := (item[1].get("data") or {}).get("imageUrl")):
                shown = url
                break
    assert shown is not None
    path = shown.removeprefix(api.services.settings.base_url)
    assert (await api.client.get(path)).status_code == 200  # shown while it ran

    token = await page_token(owner)
    url = f"/console/playground/generate?id={generation_id}"
    cancelled = await owner.client.delete(url, headers={"X-CSRF-Token": token})
    assert cancelled.json()["refunded"] == 2
    await service.dispatcher.wait(generation_id)  # its run has ended
    # Not charged, so not the account's: the image is gone, as the record says.
    assert (await api.client.get(path)).status_code == 404
    assert not (await service.generations.get(generation_id)).images
    assert await api.services.billing.balance(owner_id) == 10


async def test_the_page_carries_the_limits_and_base_url(api: Api, browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    page = await user.get("/console/playground")
    assert '"baseUrl": "https://images.example.test"' in page.text
    assert '"maxQuantity": 4' in page.text
    assert '"isPro": false' in page.text
