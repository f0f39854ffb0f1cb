"""Per-account concurrency: the exact 429, honest Retry-After, slots always freed."""

from __future__ import annotations

import asyncio

from tests.support import BOTH_DEPLOYMENTS, Api, states, wait_until

pytestmark = BOTH_DEPLOYMENTS


async def _hold_a_slot(api: Api, key, **body) -> str:  # type: ignore[no-untyped-def]
    response = await api.generate(key, prompt="long one", mode="async", **body)
    assert response.status_code == 200, response.text

    async def running() -> bool:
        return "running" in await states(api, key.account_id)

    await wait_until(running)
    return response.json()["generationId"]  # type: ignore[no-any-return]


async def test_second_generation_is_429_with_the_exact_body_and_headers(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=60, default_duration_seconds=40)
    key = await api.account(credits=10)
    await _hold_a_slot(api, key)
    for mode in ("sync", "stream", "async"):
        response = await api.generate(key, prompt="another", mode=mode)
        assert response.status_code == 429
        assert response.json() == {
            "error": "Too many concurrent API requests for this account",
            "type": "concurrency_limit",
            "limit": 1,
            "active": 1,
        }
        assert response.headers["X-RateLimit-Limit"] == "1"
        assert response.headers["X-RateLimit-Active"] == "1"
        assert 35 <= int(response.headers["Retry-After"]) <= 40
    assert await api.balance(key) == 9  # only the first was charged


async def test_retry_after_follows_the_running_generation(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=60, default_duration_seconds=7)
    key = await api.account(credits=10)
    await _hold_a_slot(api, key, quantity=3)  # expected to take 3 x 7 s
    response = await api.generate(key, prompt="another")
    assert response.status_code == 429
    assert 17 <= int(response.headers["Retry-After"]) <= 21


async def test_per_account_limit_override(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=60)
    key = await api.account(credits=10, concurrency_limit=2)
    await _hold_a_slot(api, key)
    second = await api.generate(key, prompt="two", mode="async")
    assert second.status_code == 200
    third = await api.generate(key, prompt="three", mode="async")
    assert third.status_code == 429
    assert third.json()["limit"] == 2
    assert third.json()["active"] == 2
    # Other accounts are not affected
    other = await api.account()
    assert (await api.generate(other, prompt="mine", mode="async")).status_code == 200


async def test_the_slot_frees_when_a_generation_ends(api: Api) -> None:
    key = await api.account(credits=10)
    for mode in ("sync", "stream", "sync"):
        assert (await api.generate(key, prompt="one at a time", mode=mode)).status_code == 200


async def test_the_slot_frees_when_a_generation_fails(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_failure_rate=1.0)
    key = await api.account(credits=10)
    for _ in range(3):
        assert (await api.generate(key, prompt="fails")).status_code == 502
    assert await api.balance(key) == 10


async def test_many_simultaneous_requests_never_overdraw_or_double_charge(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=0.2)
    key = await api.account(credits=13, concurrency_limit=3)
    responses = await asyncio.gather(
        *[
            api.generate(key, prompt=f"storm {i}", quantity=2, mode=m)
            for i, m in zip(range(30), ["sync", "stream", "async"] * 10, strict=True)
        ]
    )
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 402, 429}, codes
    assert 200 in codes and 429 in codes
    for generation_id in [
        r.json()["generationId"]
        for r in responses
        if r.status_code == 200 and "generationId" in r.text[:500]
    ]:
        await api.services.generation.dispatcher.wait(generation_id)
    balance = await api.balance(key)
    assert balance >= 0
    assert balance == await api.ledger_sum(key)
    charged = 13 - balance
    assert charged % 2 == 0
    assert charged == 2 * codes.count(200)
    assert "queued" not in await states(api, key.account_id)
    assert "running" not in await states(api, key.account_id)
