"""Scale-out under faults: a worker killed or stopped mid-generation, an API
process killed under an open stream, Redis restarted (and emptied) under a
running generation. Whatever happens, every generation ends settled, is charged
at most once (failed ones refunded), and the account's slot comes free."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.e2e.scaleout import (
    Deployment,
    RedisServer,
    accepted_when_free,
    credits,
    deployment_factory,  # noqa: F401
    events,
    generate,
    record,
    settled,
    via,
    wait_for,
)

GRACE = 2.0  # shutdown_grace_seconds of the deployments (scaleout.FAST_SETTINGS)


def assert_settled_exactly(
    deployment: Deployment, key: str, generation_id: str, data: dict[str, Any], start: int
) -> None:
    """Completed and charged once, or failed and refunded; the balance agrees."""
    entries = deployment.ledger(generation_id)
    charges = [amount for amount, reason in entries if reason == "generation"]
    assert len(charges) == 1, entries  # charged once, never twice
    assert sum(amount for amount, _ in entries) == -data["creditsUsed"], entries
    if data["processingStatus"] == "completed":
        assert data["creditsUsed"] == -charges[0] and data["outputImageUrls"], data
    else:
        assert data["processingStatus"] == "failed", data
        assert data["creditsUsed"] == 0 and data.get("errorMessage"), data
    for api in deployment.apis:
        if api.running:
            assert credits(api, key) == start - data["creditsUsed"]


def started_rendering(stream: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read a stream's events until a worker reports rendering; the events so far.
    (The iterator stays open: closing it would close the response.)"""
    seen = []
    for event in stream:
        seen.append(event)
        assert event["type"] == "status", seen
        if event["message"].startswith("Rendering"):
            return seen
    raise AssertionError(f"the stream ended before rendering started: {seen}")


# --- workers -----------------------------------------------------------------------------


def test_worker_killed_mid_generation_is_retried_by_another(deployment_factory: Any) -> None:  # noqa: F811
    # Slow enough that the doomed worker is still at it once the rescuer has started
    # (a worker process takes a few seconds to start on a busy machine).
    deployment = deployment_factory(apis=1, workers=1, builtin_latency_seconds=8)
    (api,) = deployment.apis
    key = deployment.demo_key
    assert key
    start = credits(api, key)
    with generate(api, key, {"prompt": "survives its worker", "mode": "stream"}, stream=True) as r:
        assert r.status_code == 200, r.text
        generation_id = r.headers["X-Generation-Id"]
        stream = events(r)
        doomed = deployment.running_worker(generation_id)
        # The rescuer: a second worker, quicker than the first.
        rescuer = deployment.add_worker(builtin_latency_seconds=0.5)
        seen = started_rendering(stream)
        killed_at = time.monotonic()
        doomed.kill()
        seen += list(stream)  # the same stream goes on
    elapsed = time.monotonic() - killed_at

    finals = [e for e in seen if e["type"] in ("complete", "error")]
    assert len(finals) == 1 and finals[0] is seen[-1], seen
    progress = [e["progress"] for e in seen]
    assert progress == sorted(progress), seen
    assert finals[0]["type"] == "complete", finals
    assert rescuer.mentions(generation_id)  # retried by the other worker...
    assert elapsed < 15  # ...once the dead one's heartbeat was missed (4 s)
    data = record(api, key, generation_id)
    assert data["processingStatus"] == "completed"
    assert data["creditsUsed"] == 1 and finals[0]["data"]["creditsUsed"] == 1
    assert finals[0]["data"]["imageUrls"] == data["outputImageUrls"]
    assert requests.get(data["outputImageUrls"][0], timeout=10).status_code == 200
    assert deployment.attempts(generation_id) == 2
    assert_settled_exactly(deployment, key, generation_id, data, start)
    accepted_when_free(api, key, {"prompt": "slot is free", "mode": "async"})


def test_sigterm_lets_a_short_generation_finish(deployment_factory: Any) -> None:  # noqa: F811
    deployment = deployment_factory(apis=1, workers=1, builtin_latency_seconds=1.0)
    (api,) = deployment.apis
    (worker,) = deployment.workers
    key = deployment.demo_key
    assert key
    start = credits(api, key)
    response = generate(api, key, {"prompt": "nearly done", "mode": "async"})
    assert response.status_code == 200, response.text
    generation_id = response.json()["generationId"]
    assert deployment.running_worker(generation_id) is worker

    worker.terminate()
    assert worker.wait(timeout=GRACE + 8) == 0
    # No worker is left: the generation ended before its worker exited.
    data = record(api, key, generation_id)
    assert data["processingStatus"] == "completed", (data, worker.text)
    assert deployment.attempts(generation_id) == 1
    assert_settled_exactly(deployment, key, generation_id, data, start)


def test_sigterm_hands_a_long_generation_to_another_worker(deployment_factory: Any) -> None:  # noqa: F811
    deployment = deployment_factory(apis=1, workers=1, builtin_latency_seconds=8)
    (api,) = deployment.apis
    (stopping,) = deployment.workers
    key = deployment.demo_key
    assert key
    start = credits(api, key)
    response = generate(api, key, {"prompt": "outlasts the grace period", "mode": "async"})
    assert response.status_code == 200, response.text
    generation_id = response.json()["generationId"]
    assert deployment.running_worker(generation_id) is stopping
    successor = deployment.add_worker(builtin_latency_seconds=0.5)

    stopped_at = time.monotonic()
    stopping.terminate()
    assert stopping.wait(timeout=GRACE + 8) == 0
    assert time.monotonic() - stopped_at < 8 - 1  # it did not wait for the generation
    # Handed back, not settled by the stopping worker (the successor may already be done).
    assert record(api, key, generation_id)["processingStatus"] in ("processing", "completed")

    data = settled(api, key, generation_id, timeout=15)
    assert data["processingStatus"] == "completed", data
    assert successor.mentions(generation_id)
    assert deployment.attempts(generation_id) == 1  # a hand-back is not a failed attempt
    assert_settled_exactly(deployment, key, generation_id, data, start)
    accepted_when_free(api, key, {"prompt": "slot is free", "mode": "async"})


# --- API processes -------------------------------------------------------------------------


def test_api_process_killed_under_an_open_stream(deployment_factory: Any) -> None:  # noqa: F811
    deployment = deployment_factory(apis=2, workers=1, builtin_latency_seconds=2)
    a, b = deployment.apis
    key = deployment.demo_key
    assert key
    start = credits(b, key)
    r = generate(a, key, {"prompt": "outlives its API process", "mode": "stream"}, stream=True)
    assert r.status_code == 200, r.text
    generation_id = r.headers["X-Generation-Id"]
    stream = events(r)
    started_rendering(stream)
    a.kill()
    with contextlib.suppress(requests.RequestException):
        list(stream)  # the stream is cut
    r.close()

    data = settled(b, key, generation_id)
    assert data["processingStatus"] == "completed", data
    assert data["creditsUsed"] == 1
    image = requests.get(via(b, data["outputImageUrls"][0]), timeout=10)
    assert image.status_code == 200
    assert_settled_exactly(deployment, key, generation_id, data, start)
    accepted_when_free(b, key, {"prompt": "slot is free", "mode": "async"})

    # The killed process comes back and serves the same deployment.
    a.start()
    assert credits(a, key) == start - 2
    assert record(a, key, generation_id) == record(b, key, generation_id)


# --- Redis ------------------------------------------------------------------------------------


def test_redis_restart_mid_generation(deployment_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    """Redis keeps nothing on disk: a restart loses every slot, queue place and
    progress stream. Generations still settle, waiting clients still get their
    answer, and the janitor restores the slots of what still runs."""
    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        deployment = deployment_factory(
            apis=1,
            workers=1,
            redis_url=redis_server.url,
            builtin_latency_seconds=6,
            builtin_steps=30,  # progress every 0.2 s: the outage surely hits some
        )
        (api,) = deployment.apis
        (worker,) = deployment.workers
        keys = [deployment.create_account(credits=10) for _ in range(3)]
        sync_key, stream_key, async_key = keys
        answers: dict[str, Any] = {}

        def sync_client() -> None:
            response = generate(api, sync_key, {"prompt": "sync through the storm"})
            answers["sync"] = (response.status_code, response.json())

        def stream_client() -> None:
            body = {"prompt": "streamed through the storm", "mode": "stream"}
            with generate(api, stream_key, body, stream=True) as response:
                answers["stream"] = (response.headers["X-Generation-Id"], list(events(response)))

        clients = [threading.Thread(target=sync_client), threading.Thread(target=stream_client)]
        for client in clients:
            client.start()
        response = generate(api, async_key, {"prompt": "async through the storm", "mode": "async"})
        assert response.status_code == 200, response.text
        async_id = response.json()["generationId"]
        slots = f"{deployment.redis_prefix}:slots:*"
        wait_for(lambda: _running(deployment) == 3 and len(redis_server.keys(slots)) == 3)

        seen = len(worker.output)
        redis_server.kill()  # everything Redis held is gone: slots, queue, progress
        wait_for(lambda: requests.get(api.url("/readyz"), timeout=10).status_code == 503)
        wait_for(lambda: _noticed_outage("".join(worker.output[seen:])), timeout=5)
        redis_server.start()
        assert not redis_server.keys(slots)
        wait_for(lambda: requests.get(api.url("/readyz"), timeout=10).status_code == 200)
        # Once it answers, every pooled connection does: the client retries a
        # command that meets a dead connection on a fresh one.
        with ThreadPoolExecutor(16) as pool:
            ready = list(
                pool.map(
                    lambda _: requests.get(api.url("/readyz"), timeout=10).status_code, range(16)
                )
            )
        assert ready == [200] * 16

        # The janitor restores the slots of the generations still running...
        wait_for(lambda: len(redis_server.keys(slots)) == 3, timeout=5)
        assert _running(deployment) == 3, "the generations ended too soon for this test"
        for key in keys:
            refused = generate(api, key, {"prompt": "still busy", "mode": "async"})
            assert refused.status_code == 429, refused.text
            assert refused.json()["type"] == "concurrency_limit"
        # Others are admitted as usual: Redis is not "unavailable" any more.
        newcomer = deployment.create_account(credits=10)
        accepted = generate(api, newcomer, {"prompt": "right after the restart", "mode": "async"})
        assert accepted.status_code == 200, accepted.text

        # ...and every generation ends settled, its client answered.
        for client in clients:
            client.join(timeout=20)
        status, body = answers["sync"]
        sync_data = settled(api, sync_key, body["generationId"])
        assert (status, body["success"]) == (
            (200, True) if sync_data["processingStatus"] == "completed" else (502, False)
        ), body
        stream_id, streamed = answers["stream"]
        finals = [e for e in streamed if e["type"] in ("complete", "error")]
        assert len(finals) == 1 and finals[0] is streamed[-1], streamed
        stream_data = settled(api, stream_key, stream_id)
        assert finals[0]["type"] == (
            "complete" if stream_data["processingStatus"] == "completed" else "error"
        ), (finals, stream_data)
        async_data = settled(api, async_key, async_id)
        for key, generation_id, data in (
            (sync_key, body["generationId"], sync_data),
            (stream_key, stream_id, stream_data),
            (async_key, async_id, async_data),
        ):
            assert_settled_exactly(deployment, key, generation_id, data, start=10)

        # No slot stays taken (at worst a lease renewed just before the end runs out).
        for key in keys:
            accepted_when_free(api, key, {"prompt": "after the storm", "mode": "async"})
    finally:
        redis_server.kill()


def _running(deployment: Deployment) -> int:
    ((count,),) = deployment.query("SELECT count(*) FROM generations WHERE state = 'running'")
    return int(count)


def _noticed_outage(log: str) -> bool:
    """The worker's log shows it met the dead Redis (janitor round or publish)."""
    return "ConnectionError" in log or "not published" in log
