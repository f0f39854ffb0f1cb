"""Scale-out, end to end: two `bananastand serve` processes (API only) and two
`bananastand worker` processes on one PostgreSQL database and one Redis.

A client may talk to either API process: every mode works through each, a
generation run by a worker is followed from any API process, and the account's
concurrency slots and credits are the same whichever process answers."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.e2e.scaleout import (
    NO_FAULTS,
    Deployment,
    accepted_when_free,
    credits,
    deployment_factory,  # noqa: F401
    events,
    generate,
    record,
    require_services,
    settled,
    via,
    wait_for,
)
from tests.support import create_database, drop_database, pg_url

CONCURRENCY_ERROR = "Too many concurrent API requests for this account"
COMPLETE_KEYS = {"success", "generationId", "imageUrls", "creditsUsed", "remainingCredits"}
LATENCY = 1.5  # seconds each generation takes in the workers of the shared deployment


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    """2 API processes + 2 workers, shared by the tests of this module; each test
    uses accounts of its own, so they do not see each other's credits or slots."""
    require_services()
    deployment = Deployment(
        tmp_path_factory.mktemp("cluster"),
        request.getfixturevalue("pg_template"),
        apis=2,
        workers=2,
        s3=request.getfixturevalue("s3_server"),  # no shared disk: a bucket
        builtin_latency_seconds=LATENCY,  # and the default keep-alive (15 s reads)
        reference_allowed_networks='["127.0.0.1/32"]',  # the webhook receiver
        **NO_FAULTS,
    )
    try:
        yield deployment.start()
    finally:
        deployment.close()


@pytest.fixture
def deployment(cluster: Deployment) -> Iterator[Deployment]:
    yield cluster
    print(cluster.logs())  # shown only when the test failed


def assert_concurrency_429(response: requests.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == {
        "error": CONCURRENCY_ERROR,
        "type": "concurrency_limit",
        "limit": limit,
        "active": limit,
    }
    assert int(response.headers["Retry-After"]) >= 0
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Active"] == str(limit)


def assert_png(content: bytes) -> None:
    with Image.open(io.BytesIO(content)) as image:
        assert image.format == "PNG"
        assert image.size == (1024, 1024)
        image.load()


def assert_downloadable_everywhere(deployment: Deployment, url: str) -> None:
    """Images are written by workers and served by every API process."""
    assert url.startswith(deployment.settings["public_base_url"] + "/images/"), url
    assert url.endswith(".png")
    for api in deployment.apis:
        image = requests.get(via(api, url), timeout=10)
        assert image.status_code == 200, (api, image.status_code)
        assert image.headers["Content-Type"] == "image/png"
        assert_png(image.content)


# --- every mode through every API process --------------------------------------------


def test_every_mode_works_through_each_api_process(deployment: Deployment) -> None:
    key = deployment.create_account(credits=20)
    a, b = deployment.apis
    for api, other in ((a, b), (b, a)):
        # sync: the quick-start request
        response = generate(api, key, {"prompt": "A cute orange cat sitting on a windowsill"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["success"] is True and answer["creditsUsed"] == 1
        assert answer["remainingCredits"] == credits(other, key)
        assert len(answer["imageUrls"]) == 1
        assert_downloadable_everywhere(deployment, answer["imageUrls"][0])
        assert record(api, key, answer["generationId"]) == record(
            other, key, answer["generationId"]
        )

        # stream: followed on this API process while a worker runs it
        with generate(api, key, {"prompt": "a streamed pear", "mode": "stream"}, stream=True) as r:
            assert r.status_code == 200, r.text
            assert r.headers["Content-Type"].startswith("text/event-stream")
            generation_id = r.headers["X-Generation-Id"]
            seen = list(events(r))
        finals = [e for e in seen if e["type"] in ("complete", "error")]
        assert len(finals) == 1 and finals[0] is seen[-1], seen
        statuses = seen[:-1]
        assert all(e["type"] == "status" for e in statuses), seen
        assert any(e["message"].startswith("Rendering") for e in statuses), seen
        progress = [e["progress"] for e in seen]
        assert progress == sorted(progress) and progress[0] >= 0 and progress[-1] == 100, seen
        final = finals[0]
        assert final["type"] == "complete", final
        assert set(final["data"]) >= COMPLETE_KEYS
        assert final["data"]["success"] is True
        assert final["data"]["generationId"] == generation_id
        assert final["data"]["creditsUsed"] == 1
        assert final["data"]["remainingCredits"] == credits(other, key)
        assert_downloadable_everywhere(deployment, final["data"]["imageUrls"][0])
        data = record(other, key, generation_id)
        assert data == record(api, key, generation_id)
        assert data["processingStatus"] == "completed"
        assert data["outputImageUrls"] == final["data"]["imageUrls"]

        # async: accepted here, polled through both
        response = generate(api, key, {"prompt": "a polled plum", "mode": "async", "quantity": 2})
        assert response.status_code == 200, response.text
        accepted = response.json()
        assert accepted["async"] is True and accepted["creditsUsed"] == 2
        generation_id = accepted["generationId"]
        assert record(other, key, generation_id)["processingStatus"] == "processing"
        data = settled(other, key, generation_id)
        assert data == record(api, key, generation_id)
        assert data["processingStatus"] == "completed"
        assert data["creditsUsed"] == 2 and len(data["outputImageUrls"]) == 2
        for url in data["outputImageUrls"]:
            assert_downloadable_everywhere(deployment, url)

    assert credits(a, key) == credits(b, key) == 20 - 2 * (1 + 1 + 2)
    # API processes only dispatch: every job ran in a worker.
    for api in deployment.apis:
        assert "Starting job" not in "".join(api.output)
    assert any("Starting job" in worker.text for worker in deployment.workers)


# --- limits and credits across processes ------------------------------------------------


def test_concurrency_limit_holds_across_api_processes(deployment: Deployment) -> None:
    key = deployment.create_account(credits=10)  # default limit: 1
    a, b = deployment.apis
    response = generate(a, key, {"prompt": "holds the slot", "mode": "async"})
    assert response.status_code == 200, response.text
    generation_id = response.json()["generationId"]

    # The other process sees the slot taken, whatever the mode; so does the first.
    assert_concurrency_429(generate(b, key, {"prompt": "too soon"}), limit=1)
    with generate(b, key, {"prompt": "too soon", "mode": "stream"}, stream=True) as streamed:
        assert_concurrency_429(streamed, limit=1)
    assert_concurrency_429(generate(b, key, {"prompt": "too soon", "mode": "async"}), limit=1)
    assert_concurrency_429(generate(a, key, {"prompt": "too soon"}), limit=1)
    assert credits(b, key) == 9  # refusals charge nothing

    data = settled(b, key, generation_id)
    assert data["processingStatus"] == "completed"
    # Freed at settlement, not when the lease runs out.
    again = accepted_when_free(b, key, {"prompt": "my turn"}, timeout=3)
    assert again.json()["remainingCredits"] == 8 == credits(a, key)


def test_credits_are_exact_with_simultaneous_clients_on_both_processes(
    deployment: Deployment,
) -> None:
    start, limit, clients = 13, 3, 16
    key = deployment.create_account(credits=start, concurrency_limit=limit)
    apis = deployment.apis
    modes = ["sync", "stream", "async"]
    barrier = threading.Barrier(clients)
    statuses: list[int] = []
    rejections: list[requests.Response] = []
    lock = threading.Lock()

    def client(index: int) -> tuple[int, int]:
        """Retry on 429 until served (200) or refused for credits (402)."""
        api = apis[index % 2]
        mode = modes[index % 3]
        body = {"prompt": f"crowd {index}", "quantity": 2, "mode": mode}
        barrier.wait(timeout=10)
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            response = generate(api, key, body, stream=mode == "stream")
            with lock:
                statuses.append(response.status_code)
            if response.status_code == 429:
                response.content  # noqa: B018 (read the body before the next try)
                with lock:
                    rejections.append(response)
                time.sleep(0.1)  # client back-off between retries
                continue
            if response.status_code != 200:
                return response.status_code, 0
            if mode == "sync":
                return 200, int(response.json()["creditsUsed"])
            if mode == "stream":
                with response:
                    final = list(events(response))[-1]
                assert final["type"] == "complete", final
                return 200, int(final["data"]["creditsUsed"])
            data = settled(apis[(index + 1) % 2], key, response.json()["generationId"])
            assert data["processingStatus"] == "completed", data
            return 200, int(data["creditsUsed"])
        raise AssertionError(f"client {index} was neither served nor refused in time")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = list(pool.map(client, range(clients)))

    assert set(statuses) <= {200, 402, 429}, sorted(set(statuses))
    assert 429 in statuses and 402 in statuses
    for response in rejections:
        assert_concurrency_429(response, limit=limit)
    served = [used for status, used in outcomes if status == 200]
    assert served and all(used == 2 for used in served)
    final = credits(apis[0], key)
    assert final == credits(apis[1], key) == start - sum(served) >= 0
    assert final < 2 and len(served) == start // 2  # everyone retried until refused

    # Never more than `limit` generations of the account in progress at once.
    rows = deployment.query(
        "SELECT created_at, finished_at FROM generations WHERE account_id = %s",
        deployment.account_ids[key],
    )
    assert len(rows) == len(served)
    moments = sorted(
        itertools.chain.from_iterable(((start_, 1), (end, -1)) for start_, end in rows),
        key=lambda moment: (moment[0], moment[1]),
    )
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    assert peak <= limit, rows


# --- probes and the worker command -----------------------------------------------------


def test_health_and_readiness_on_every_api_process(deployment: Deployment) -> None:
    for api in deployment.apis:
        health = requests.get(api.url("/healthz"), timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = requests.get(api.url("/readyz"), timeout=10)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ok", body
        assert body.get("database") == "up", body
        assert body.get("redis", "up") == "up", body


def test_worker_refuses_to_run_without_scale_out_settings(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BANANASTAND_")}
    base["BANANASTAND_DATA_DIR"] = str(tmp_path / "data")

    def worker(**settings: str) -> subprocess.CompletedProcess[str]:
        env = {**base, **{f"BANANASTAND_{k.upper()}": v for k, v in settings.items()}}
        return subprocess.run(
            [sys.executable, "-m", "bananastand", "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    embedded = worker()
    assert embedded.returncode != 0
    assert "scale-out" in embedded.stderr and "BANANASTAND_REDIS_URL" in embedded.stderr
    assert "Traceback" not in embedded.stderr
    assert "worker running" not in embedded.stdout

    # Redis alone is not enough: the database must be one every process shares.
    sqlite = worker(redis_url="redis://127.0.0.1:6379/0")
    assert sqlite.returncode != 0
    assert "PostgreSQL" in sqlite.stderr and "BANANASTAND_DATABASE_URL" in sqlite.stderr
    assert "Traceback" not in sqlite.stderr
    assert not (tmp_path / "data" / "bananastand.db").exists()


# --- image URLs built by workers ------------------------------------------------------------


def test_stream_image_urls_without_a_public_base_url(deployment_factory: Any) -> None:  # noqa: F811
    deployment = deployment_factory(apis=1, workers=1, public_base_url="")
    (api,) = deployment.apis
    key = deployment.demo_key
    assert key
    with generate(api, key, {"prompt": "where is my image", "mode": "stream"}, stream=True) as r:
        assert r.status_code == 200, r.text
        final = list(events(r))[-1]
    assert final["type"] == "complete", final
    (url,) = final["data"]["imageUrls"]
    assert record(api, key, final["data"]["generationId"])["outputImageUrls"] == [url]
    assert url.startswith(api.base_url + "/images/"), url


# --- races ---------------------------------------------------------------------------------


def test_janitor_does_not_revive_a_released_slot(deployment_factory: Any) -> None:  # noqa: F811
    # A janitor that runs all the time makes the race show within a few generations.
    deployment = deployment_factory(apis=1, workers=1, janitor_interval_seconds=0.01)
    (api,) = deployment.apis
    key = deployment.demo_key
    assert key
    for index in range(60):
        response = generate(api, key, {"prompt": f"one after another {index}"})
        # Each generation has ended when its answer arrives: the next one must be served.
        assert response.status_code == 200, (index, response.text)


# Each process: loads, says "ready", waits for "go" on stdin, then migrates the database
# as `bananastand serve` and `bananastand worker` do first thing.
_MIGRATE_ON_GO = """
import asyncio, sys
from bananastand.db import Database
database = Database(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
async def main():
    try:
        await database.migrate()
    finally:
        await database.close()
asyncio.run(main())
"""


def test_processes_starting_together_on_a_fresh_database() -> None:
    require_services()
    name = create_database("template0")  # empty: nothing migrated yet
    processes: list[subprocess.Popen[str]] = []
    try:
        processes += [
            subprocess.Popen(
                [sys.executable, "-c", _MIGRATE_ON_GO, pg_url(name)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        failures = []
        for process in processes:
            _, stderr = process.communicate(timeout=60)
            if process.returncode:
                errors = [line for line in stderr.splitlines() if "Error" in line]
                failures.append(errors[-1] if errors else stderr[-300:])
        assert not failures, failures
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        drop_database(name)


# --- no shared disk: a bucket ------------------------------------------------------------


def reference_url() -> str:
    import base64

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_no_shared_disk_references_webhooks_and_cancel_through_the_bucket(
    deployment: Deployment,
) -> None:
    """Each process has a data folder of its own: reference images fetched by one
    API process are read by a worker from the bucket, images written by workers are
    served by every API process, webhooks carry their URLs, and a cancelled
    generation's references are deleted from the bucket."""
    from tests.fakes.webhook_receiver import WebhookReceiver

    key = deployment.create_account(credits=20)
    a, b = deployment.apis
    receiver = WebhookReceiver()
    try:
        body = {
            "prompt": "like this, but blue",
            "mode": "async",
            "referenceImageUrls": [reference_url()],
            "callbackUrl": receiver.url,
        }
        response = generate(a, key, body)
        assert response.status_code == 200, response.text
        generation_id = response.json()["generationId"]
        data = settled(b, key, generation_id)
        assert data["processingStatus"] == "completed", data
        assert data["creditsUsed"] == 1
        (url,) = data["outputImageUrls"]
        for api in deployment.apis:  # shaped like the reference (4:3), from the bucket
            image = requests.get(via(api, url), timeout=10)
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        # Written to the bucket, read back by another process; references gone after.
        image_id = url.rsplit("/", 1)[1].split(".")[0]
        assert any(image_id in stored for stored in deployment.stored("images/"))
        assert not [k for k in deployment.stored("references/") if generation_id in k]
        wait_for(lambda: receiver.count() >= 1)
        delivered = receiver.received[0].body.decode()
        assert generation_id in delivered and url in delivered
    finally:
        receiver.close()

    # Cancelled through the other API process while a worker runs it.
    body = {"prompt": "never mind", "mode": "async", "referenceImageUrls": [reference_url()]}
    response = generate(b, key, body)
    assert response.status_code == 200, response.text
    generation_id = response.json()["generationId"]
    assert [k for k in deployment.stored("references/") if generation_id in k]
    cancelled = requests.delete(
        a.url("/api/v1/generate"),
        params={"id": generation_id},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert cancelled.status_code == 200, cancelled.text
    data = settled(b, key, generation_id)
    assert data["processingStatus"] == "failed" and data["creditsUsed"] == 0
    assert not [k for k in deployment.stored("references/") if generation_id in k]
    assert credits(a, key) == credits(b, key) == 19

    # Nothing of any image or reference ever touched a process's data folder.
    on_disk = [path for path in deployment.files() if path.suffix in (".png", ".bin", ".webp")]
    assert on_disk == [], on_disk
