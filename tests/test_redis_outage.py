"""Redis trouble in scale-out: a clear 503 without it, the slot limit kept after a
restart, long blocking reads that do not time out, one log line per outage."""

from __future__ import annotations

import pytest

from tests.support import Api, states


@pytest.mark.parametrize("deployment", ["scale-out"], indirect=True)
async def test_without_redis_nothing_is_admitted_or_charged(api: Api) -> None:
    from redis.asyncio import Redis

    from bananastand.redis_slots import RedisSlots

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


@pytest.mark.parametrize("deployment", ["scale-out"], indirect=True)
async def test_the_concurrency_limit_holds_when_redis_forgot_the_slots(api_factory) -> None:  # type: ignore[no-untyped-def]
    """After a Redis restart its slot set is empty until the janitor refills it:
    admission still counts the generations in progress in the database."""
    api = await api_factory(builtin_latency_seconds=30, janitor_interval_seconds=60)
    key = await api.account(credits=10, concurrency_limit=1)
    first = await api.generate(key, prompt="holds the slot", mode="async")
    assert first.status_code == 200
    redis = api.services.redis
    assert redis is not None
    slots = api.services.generation.slots
    assert slots is not None
    assert await redis.delete(slots._account_key(key.account_id)) == 1  # as a restart would
    refused = await api.generate(key, prompt="one too many", mode="async")
    assert refused.status_code == 429, refused.text
    assert refused.json()["type"] == "concurrency_limit"
    assert await api.balance(key) == 9
    assert sorted(await states(api, key.account_id)) in (["queued"], ["running"])
    # The refused one left no slot behind in Redis either.
    assert await redis.zcard(slots._account_key(key.account_id)) == 0


@pytest.mark.parametrize("deployment", ["scale-out"], indirect=True)
async def test_a_stream_waiting_longer_than_redis_timeouts_keeps_its_progress(
    api_factory, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """With the default keep-alive (a 15 s blocking read), a stream queued behind
    another generation for several seconds still follows Redis, not the database."""
    import logging

    from tests.support import parse_sse

    api = await api_factory(
        builtin_latency_seconds=6, stream_keepalive_seconds=15, worker_concurrency=1
    )
    first = await api.account(credits=10)
    waiting = await api.account(credits=10)
    assert (await api.generate(first, prompt="ahead", mode="async")).status_code == 200
    with caplog.at_level(logging.WARNING, logger="bananastand"):
        answer = await api.client.post(
            "/api/v1/generate",
            json={"prompt": "behind", "mode": "stream"},
            headers=waiting.headers,
            timeout=60,
        )
    events, _ = parse_sse(answer.text)
    assert events[-1]["type"] == "complete"
    rendering = [e for e in events if e["type"] == "status" and "Rendering" in e["message"]]
    assert len(rendering) >= 3  # progress came through Redis while it ran
    assert "following the database" not in caplog.text


async def test_an_outage_is_logged_once_not_every_janitor_round(
    api_factory, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import logging

    from redis.exceptions import ConnectionError as RedisConnectionError

    from bananastand.janitor import Janitor

    api = await api_factory(janitor_interval_seconds=0.01)
    janitor = Janitor(api.services.generation, None, None)  # type: ignore[arg-type]
    rounds = 0
    healthy_after = 5

    async def round_() -> dict[str, int]:
        nonlocal rounds
        rounds += 1
        if rounds <= healthy_after:
            raise RedisConnectionError("Connection refused")
        return {}

    janitor.round = round_  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="bananastand.janitor"):
        task = asyncio.create_task(janitor.run_forever())
        while rounds < healthy_after + 3:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "bananastand.janitor"]
    assert messages == [
        "janitor round failed (ConnectionError); retrying each round",
        "janitor rounds work again",
    ]
    assert not any(r.exc_info for r in caplog.records if r.name == "bananastand.janitor")


async def test_a_renewal_from_a_stale_read_never_revives_a_released_slot() -> None:
    # The janitor read "in progress", the generation settled and let its slot and
    # queue place go, then the janitor renewed what it had read: still released.
    import secrets

    from redis.asyncio import Redis

    from bananastand.redis_slots import RedisSlots

    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    slots = RedisSlots(redis, prefix=f"bstest-{secrets.token_hex(4)}", lease_seconds=30)
    try:
        assert await slots.acquire("acct", "gen-1", limit=1) == (True, 1)
        assert await slots.enqueue("gen-1", capacity=5, lease_seconds=30) == (True, 1)
        assert await slots.enqueue("gen-2", capacity=5, lease_seconds=30) == (True, 2)
        await slots.release("acct", "gen-1")
        await slots.dequeue("gen-2")
        await slots.renew([("acct", "gen-1")], queued=["gen-1", "gen-2"])
        assert await slots.active("acct") == 0
        assert await slots.acquire("acct", "gen-3", limit=1) == (True, 1)
        assert await redis.zcard(f"{slots.prefix}:queue") == 0
        # What was never let go is still renewed (and restored after a Redis restart).
        await redis.delete(f"{slots.prefix}:slots:acct")
        await slots.renew([("acct", "gen-3")])
        assert await slots.active("acct") == 1
    finally:
        keys = [key async for key in redis.scan_iter(f"{slots.prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
