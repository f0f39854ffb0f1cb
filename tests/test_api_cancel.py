"""DELETE /api/v1/generate?id=: cancel a waiting or running generation (extension)."""

from __future__ import annotations

from tests.support import BOTH_DEPLOYMENTS, Api, data_url, png_bytes, states, wait_until

pytestmark = BOTH_DEPLOYMENTS


async def test_cancelling_a_running_generation_refunds_it_and_frees_the_slot(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(builtin_latency_seconds=30)
    key = await api.account(credits=10)
    accepted = (await api.generate(key, prompt="too slow", mode="async", quantity=3)).json()
    generation_id = accepted["generationId"]
    assert await api.balance(key) == 7

    async def running() -> bool:
        return await states(api, key.account_id) == ["running"]

    await wait_until(running)
    response = await api.client.delete(
        "/api/v1/generate", params={"id": generation_id}, headers=key.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"]["processingStatus"] == "failed"
    assert "Cancelled" in body["data"]["errorMessage"]
    assert body["data"]["creditsUsed"] == 0
    assert await api.balance(key) == 10
    assert await api.ledger_sum(key) == 10
    # The slot is free at once: another generation is accepted.
    assert (await api.generate(key, prompt="next", mode="async")).status_code == 200
    again = await api.client.delete(
        "/api/v1/generate", params={"id": generation_id}, headers=key.headers
    )
    assert again.status_code == 200
    assert again.json()["success"] is False
    assert "already failed" in again.json()["message"]


async def test_cancelling_a_finished_generation_changes_nothing(api: Api) -> None:
    key = await api.account(credits=5)
    done = (await api.generate(key, prompt="quick")).json()
    response = await api.client.delete(
        "/api/v1/generate", params={"id": done["generationId"]}, headers=key.headers
    )
    assert response.json()["success"] is False
    assert response.json()["data"]["processingStatus"] == "completed"
    assert await api.balance(key) == 4


async def test_cancelling_someone_elses_or_an_unknown_generation_is_404(api: Api) -> None:
    alice = await api.account()
    bob = await api.account()
    done = (await api.generate(alice, prompt="mine")).json()
    for generation_id in (done["generationId"], "unknown"):
        response = await api.client.delete(
            "/api/v1/generate", params={"id": generation_id}, headers=bob.headers
        )
        assert response.status_code == 404


async def test_cancelling_a_queued_generation_releases_its_reference_images(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(builtin_latency_seconds=30, async_workers=1, worker_concurrency=1)
    key = await api.account(credits=10, concurrency_limit=2)
    storage = api.services.generation.storage
    running = (await api.generate(key, prompt="first", mode="async")).json()["generationId"]

    async def started() -> bool:
        return await states(api, key.account_id) == ["running"]

    await wait_until(started)
    reference = data_url(png_bytes((64, 64)))
    queued = (
        await api.generate(key, prompt="second", mode="async", referenceImageUrls=[reference])
    ).json()["generationId"]
    assert sorted(await states(api, key.account_id)) == ["queued", "running"]
    assert storage.path(f"references/{queued}/0.bin") is not None
    for generation_id in (queued, running):
        response = await api.client.delete(
            "/api/v1/generate", params={"id": generation_id}, headers=key.headers
        )
        assert response.json()["data"]["processingStatus"] == "failed"
    assert storage.path(f"references/{queued}/0.bin") is None
    assert storage.path(f"references/{queued}/0.json") is None
    assert queued not in api.services.generation._references
    assert await api.balance(key) == 10


async def test_the_sweep_deletes_references_of_ended_generations_only(api_factory) -> None:  # type: ignore[no-untyped-def]
    """Reference files left behind (a crash between settling and tidying up) go at
    the hourly sweep once their generation has ended; a live one keeps its own."""
    import os
    import time

    api: Api = await api_factory(builtin_latency_seconds=30, async_workers=1, worker_concurrency=1)
    key = await api.account(credits=10, concurrency_limit=2)
    storage = api.services.generation.storage
    done = (await api.generate(key, prompt="first", mode="async")).json()["generationId"]
    reference = data_url(png_bytes((64, 64)))
    queued = (
        await api.generate(key, prompt="waits", mode="async", referenceImageUrls=[reference])
    ).json()["generationId"]
    await api.client.delete("/api/v1/generate", params={"id": done}, headers=key.headers)
    await storage.put(f"references/{done}/0.bin", b"left behind")
    await storage.put(f"references/{done}/0.json", b"{}")
    await storage.put("references/unknown-generation/0.bin", b"never had a record")
    long_ago = time.time() - 2 * 3600
    for key_ in (
        f"references/{done}/0.bin",
        f"references/{done}/0.json",
        "references/unknown-generation/0.bin",
        f"references/{queued}/0.bin",
        f"references/{queued}/0.json",
    ):
        path = storage.path(key_)
        assert path is not None, key_
        os.utime(path, (long_ago, long_ago))
    assert await api.services.generation.sweep_orphans() == 3
    assert storage.path(f"references/{done}/0.bin") is None
    assert storage.path("references/unknown-generation/0.bin") is None
    assert storage.path(f"references/{queued}/0.bin") is not None


async def test_a_generation_past_its_age_limit_is_ended_and_refunded(api_factory) -> None:  # type: ignore[no-untyped-def]
    """Embedded too: a run that cannot settle does not hold the slot until a restart."""
    api: Api = await api_factory(builtin_latency_seconds=30, generation_max_age_seconds=0.2)
    key = await api.account(credits=10, concurrency_limit=1)
    generation_id = (await api.generate(key, prompt="stuck", mode="async")).json()["generationId"]
    assert await api.balance(key) == 9

    async def ended() -> bool:
        await api.services.generation.expire_overdue()  # what the periodic sweep does
        return (await api.poll(key, generation_id))["processingStatus"] != "processing"

    await wait_until(ended)
    record = await api.poll(key, generation_id)
    assert record["processingStatus"] == "failed"
    assert "did not finish in time" in record["errorMessage"]
    assert await api.balance(key) == 10 == await api.ledger_sum(key)
    assert (await api.generate(key, prompt="next", mode="async")).status_code == 200
