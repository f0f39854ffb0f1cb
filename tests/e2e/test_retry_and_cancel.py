"""Over a real server, as a client meets them: a retry after a dropped connection
is charged once (Idempotency-Key), and a cancelled running generation is refunded."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Server


def credits(server: Server) -> int:
    answer = requests.get(server.url("/api/v1/credits"), headers=server.headers, timeout=10)
    return int(answer.json()["data"]["credits"])


def test_a_retry_after_a_dropped_connection_is_charged_once(server_factory: Any) -> None:
    server = server_factory(builtin_latency_seconds=1.5).start()
    before = credits(server)
    headers = {**server.headers, "Idempotency-Key": "order-4711"}
    body = {"prompt": "a lighthouse", "quantity": 2}
    # The client gives up (its connection drops) while the generation runs.
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(server.url("/api/v1/generate"), headers=headers, json=body, timeout=0.3)
    retried = requests.post(server.url("/api/v1/generate"), headers=headers, json=body, timeout=30)
    assert retried.status_code == 200
    assert retried.headers["Idempotent-Replayed"] == "true"
    result = retried.json()
    assert result["success"] is True and len(result["imageUrls"]) == 2
    assert credits(server) == before - 2 == result["remainingCredits"]
    listing = requests.get(
        server.url("/api/v1/generations"), headers=server.headers, timeout=10
    ).json()
    assert [g["id"] for g in listing["data"]] == [result["generationId"]]


def test_a_cancelled_running_generation_is_refunded(server_factory: Any) -> None:
    server = server_factory(builtin_latency_seconds=30, builtin_steps=30).start()
    before = credits(server)
    body = {"prompt": "a slow castle", "mode": "stream", "quantity": 3}
    with requests.post(
        server.url("/api/v1/generate"), headers=server.headers, json=body, stream=True, timeout=30
    ) as stream:
        generation_id = stream.headers["X-Generation-Id"]
        events = (
            json.loads(line[6:]) for line in stream.iter_lines() if line.startswith(b"data: ")
        )
        # Running: the backend has reported progress.
        assert next(e for e in events if e["progress"] > 0)["type"] == "status"
        assert credits(server) == before - 3
        cancelled = requests.delete(
            server.url("/api/v1/generate"),
            params={"id": generation_id},
            headers=server.headers,
            timeout=10,
        )
        assert cancelled.status_code == 200, cancelled.text
        final = next(e for e in events if e["type"] != "status")
    assert final["type"] == "error"
    assert final["data"]["creditsUsed"] == 0
    record = server.record(generation_id)
    assert record["processingStatus"] == "failed"
    assert "ancel" in record["errorMessage"]
    assert credits(server) == before == final["data"]["remainingCredits"]
    # Its slot is free: the account's next generation is accepted (limit 1).
    quick = requests.post(
        server.url("/api/v1/generate"),
        headers=server.headers,
        json={"prompt": "next", "mode": "async"},
        timeout=10,
    )
    assert quick.status_code == 200
