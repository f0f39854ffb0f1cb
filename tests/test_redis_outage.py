"""Scale-out without Redis at admission: a clear 503, nothing admitted or charged."""

from __future__ import annotations

import pytest

from tests.conftest import Api, states


@pytest.mark.parametrize("deployment", ["scale-out"], indirect=True)
async def test_without_redis_nothing_is_admitted_or_charged(api: Api) -> None:
    from redis.asyncio import Redis

    from bananastand.limits import RedisSlots

    key = await api.account(credits=10)
    service = api.services.generation
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    live, service.slots = service.slots, RedisSlots(dead, prefix="x", lease_seconds=5)
    try:
        for mode in ("sync", "stream", "async"):
            answer = await api.generate(key, prompt="x", mode=mode)
            assert answer.status_code == 503, mode
            assert answer.json()["type"] == "server_busy"
            assert "unavailable" in answer.json()["error"]
            assert answer.headers["Retry-After"] == "5"
        assert await api.balance(key) == 10
        assert await states(api, key.account_id) == []
    finally:
        service.slots = live
        await dead.aclose()
