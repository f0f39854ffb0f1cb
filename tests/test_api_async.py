"""mode=async: immediate answer, polling, the bounded queue."""

from __future__ import annotations

from tests.support import BOTH_DEPLOYMENTS, Api, states, wait_until

pytestmark = BOTH_DEPLOYMENTS


async def test_async_answers_at_once_then_poll_until_completed(api: Api) -> None:
    key = await api.account(credits=10)
    response = await api.generate(key, prompt="a castle", mode="async", quantity=2)
    assert response.status_code == 200
    body = response.json()
    generation_id = body["generationId"]
    assert body == {
        "success": True,
        "async": True,
        "generationId": generation_id,
        "message": "Generation started. Use GET /api/v1/generate?id="
        f"{generation_id} to poll for results.",
        "creditsUsed": 2,
        "remainingCredits": 8,
    }
    data = await api.wait_settled(key, generation_id)
    assert data["processingStatus"] == "completed"
    assert len(data["outputImageUrls"]) == 2
    assert data["creditsUsed"] == 2


async def test_async_record_reads_processing_while_running(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=30)
    key = await api.account()
    body = (await api.generate(key, prompt="slow", mode="async")).json()
    data = await api.poll(key, body["generationId"])
    assert data["processingStatus"] == "processing"
    assert data["outputImageUrls"] == []
    assert data["creditsUsed"] == 1


async def test_async_failure_is_failed_and_refunded(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_failure_rate=1.0)
    key = await api.account(credits=5)
    body = (await api.generate(key, prompt="cat", mode="async", quantity=3)).json()
    assert body["remainingCredits"] == 2
    data = await api.wait_settled(key, body["generationId"])
    assert data["processingStatus"] == "failed"
    assert data["errorMessage"]
    assert data["creditsUsed"] == 0
    assert await api.balance(key) == 5


async def test_full_queue_is_503_with_retry_after_and_charges_nothing(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(
        builtin_latency_seconds=30,
        async_workers=1,
        worker_concurrency=1,  # scale-out: one generation at a time per worker process
        async_queue_size=1,
        default_duration_seconds=20,
    )
    key = await api.account(credits=10, concurrency_limit=10)
    first = await api.generate(key, prompt="one", mode="async")
    assert first.status_code == 200

    async def first_running() -> bool:
        return await states(api, key.account_id) == ["running"]

    await wait_until(first_running)
    second = await api.generate(key, prompt="two", mode="async")
    assert second.status_code == 200  # waits in the queue
    third = await api.generate(key, prompt="three", mode="async")
    assert third.status_code == 503
    assert third.json()["type"] == "server_busy"
    assert int(third.headers["Retry-After"]) >= 1
    assert await api.balance(key) == 8


async def test_queue_bound_applies_to_async_mode_only(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(async_queue_size=0)
    key = await api.account(credits=5)
    assert (await api.generate(key, prompt="later", mode="async")).status_code == 503
    assert await api.balance(key) == 5
    assert (await api.generate(key, prompt="now", mode="sync")).status_code == 200
    assert (await api.generate(key, prompt="now", mode="stream")).status_code == 200
