"""Idempotency-Key on POST /api/v1/generate: a retry never charges twice (extension)."""

from __future__ import annotations

import asyncio

from tests.support import BOTH_DEPLOYMENTS, Api, Key

pytestmark = BOTH_DEPLOYMENTS


async def _post(api: Api, key: Key, idempotency_key: str, **body: object):  # type: ignore[no-untyped-def]
    return await api.client.post(
        "/api/v1/generate",
        json=body,
        headers={**key.headers, "Idempotency-Key": idempotency_key},
    )


async def test_a_retried_async_request_returns_the_same_generation(api: Api) -> None:
    key = await api.account(credits=10)
    first = await _post(api, key, "order-42", prompt="a castle", mode="async", quantity=2)
    second = await _post(api, key, "order-42", prompt="a castle", mode="async", quantity=2)
    assert first.status_code == second.status_code == 200
    assert second.json()["generationId"] == first.json()["generationId"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    await api.wait_settled(key, first.json()["generationId"])
    assert await api.balance(key) == 8  # charged once
    listed = (await api.client.get("/api/v1/generations", headers=key.headers)).json()
    assert len(listed["data"]) == 1


async def test_a_retried_sync_request_returns_the_original_result(api: Api) -> None:
    key = await api.account(credits=10)
    first = (await _post(api, key, "k-1", prompt="a tram")).json()
    again = (await _post(api, key, "k-1", prompt="a tram")).json()
    assert again["generationId"] == first["generationId"]
    assert again["imageUrls"] == first["imageUrls"]
    assert again["creditsUsed"] == 1
    assert await api.balance(key) == 9


async def test_a_retry_while_the_first_still_runs_is_the_same_generation(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(builtin_latency_seconds=30)
    key = await api.account(credits=10)
    first = await _post(api, key, "slow-1", prompt="slow", mode="async")
    again = await _post(api, key, "slow-1", prompt="slow", mode="async")
    assert again.status_code == 200, again.text  # not 429: it is the same generation
    assert again.json()["generationId"] == first.json()["generationId"]
    assert await api.balance(key) == 9


async def test_simultaneous_duplicates_make_one_generation(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(builtin_latency_seconds=0.3)
    key = await api.account(credits=10, concurrency_limit=5)
    answers = await asyncio.gather(*[_post(api, key, "burst", prompt="one only") for _ in range(5)])
    ids = {a.json()["generationId"] for a in answers if a.status_code == 200}
    assert len(ids) == 1
    assert await api.balance(key) == 9


async def test_the_same_key_with_another_body_is_409(api: Api) -> None:
    key = await api.account(credits=10)
    assert (await _post(api, key, "k-2", prompt="a fox")).status_code == 200
    clash = await _post(api, key, "k-2", prompt="a wolf")
    assert clash.status_code == 409
    assert clash.json()["type"] == "idempotency_conflict"
    assert await api.balance(key) == 9


async def test_keys_belong_to_one_account_and_must_be_sane(api: Api) -> None:
    alice = await api.account(credits=5)
    bob = await api.account(credits=5)
    a = (await _post(api, alice, "shared", prompt="cat")).json()
    b = (await _post(api, bob, "shared", prompt="cat")).json()
    assert a["generationId"] != b["generationId"]
    too_long = await _post(api, alice, "x" * 300, prompt="cat")
    assert too_long.status_code == 400
