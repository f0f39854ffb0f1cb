"""A killed server loses nothing: at the next start, async generations resume
and the others are failed and refunded; no slot stays taken."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any

import requests

from tests.e2e.conftest import Server


def _wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _credits(server: Server, key: str) -> int:
    response = requests.get(
        server.url("/api/v1/credits"), headers={"Authorization": f"Bearer {key}"}, timeout=5
    )
    return int(response.json()["data"]["credits"])


def test_async_generation_resumes_after_kill_9(server_factory: Any, tmp_path: Any) -> None:
    first = server_factory(tmp_path / "data", builtin_latency_seconds=60).start()
    key = first.demo_key
    assert key
    headers = {"Authorization": f"Bearer {key}"}
    submitted = requests.post(
        first.url("/api/v1/generate"),
        json={"prompt": "survivor", "mode": "async"},
        headers=headers,
        timeout=10,
    ).json()
    generation_id = submitted["generationId"]
    assert submitted["remainingCredits"] == 99
    first.kill()

    second = server_factory(tmp_path / "data").start()
    assert second.demo_key is None  # the demo account is created once, on the first start

    def completed() -> dict | None:  # type: ignore[type-arg]
        data = requests.get(
            second.url("/api/v1/generate"),
            params={"id": generation_id},
            headers=headers,
            timeout=5,
        ).json()["data"]
        return data if data["processingStatus"] != "processing" else None

    data = _wait_for(completed)
    assert data["processingStatus"] == "completed"
    assert len(data["outputImageUrls"]) == 1
    assert data["creditsUsed"] == 1
    assert _credits(second, key) == 99  # charged once, not twice
    image = requests.get(data["outputImageUrls"][0], timeout=5)
    assert image.status_code == 200


def test_sync_generation_cut_by_kill_9_is_failed_and_refunded(
    server_factory: Any, tmp_path: Any
) -> None:
    first = server_factory(tmp_path / "data", builtin_latency_seconds=60).start()
    key = first.demo_key
    assert key
    headers = {"Authorization": f"Bearer {key}"}

    def call() -> None:
        with contextlib.suppress(requests.RequestException):  # the server dies under it
            requests.post(
                first.url("/api/v1/generate"),
                json={"prompt": "doomed", "quantity": 2},
                headers=headers,
                timeout=30,
            )

    caller = threading.Thread(target=call)
    caller.start()
    _wait_for(lambda: _credits(first, key) == 98)  # charged at acceptance
    first.kill()
    caller.join(timeout=10)

    second = server_factory(tmp_path / "data").start()
    assert _credits(second, key) == 100  # refunded at the next start
    # The slot is free again: a new generation is accepted, not 429.
    response = requests.post(
        second.url("/api/v1/generate"), json={"prompt": "next"}, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    ledger = second.cli("admin", "ledger", "demo@bananastand.local")
    assert ledger.returncode == 0, ledger.stderr
    assert "refund" in ledger.stdout
    assert "balance: 99" in ledger.stdout


def test_second_server_on_the_same_data_folder_is_refused(
    server_factory: Any, tmp_path: Any
) -> None:
    server_factory(tmp_path / "data").start()
    clash = server_factory(tmp_path / "data")
    clash_process = clash.cli("serve")
    assert clash_process.returncode != 0
    assert "already using" in clash_process.stderr


def test_state_survives_a_clean_restart(server_factory: Any, tmp_path: Any) -> None:
    first = server_factory(tmp_path / "data").start()
    key = first.demo_key
    headers = {"Authorization": f"Bearer {key}"}
    body = requests.post(
        first.url("/api/v1/generate"), json={"prompt": "kept"}, headers=headers, timeout=30
    ).json()
    first.stop()
    second = server_factory(tmp_path / "data").start()
    data = requests.get(
        second.url("/api/v1/generate"),
        params={"id": body["generationId"]},
        headers=headers,
        timeout=5,
    ).json()["data"]
    assert data["processingStatus"] == "completed"
    assert _credits(second, key) == 99


def test_sigterm_lets_open_sync_and_stream_requests_finish(
    server_factory: Any, tmp_path: Any
) -> None:
    server = server_factory(
        tmp_path / "data",
        builtin_latency_seconds=1.5,
        shutdown_grace_seconds=8,
        default_concurrency_limit=2,
    ).start()
    key = server.demo_key
    headers = {"Authorization": f"Bearer {key}"}
    answers: dict[str, Any] = {}

    def call(mode: str) -> None:
        response = requests.post(
            server.url("/api/v1/generate"),
            json={"prompt": "finish me", "mode": mode},
            headers=headers,
            timeout=30,
        )
        answers[mode] = (response.status_code, response.text)

    callers = [threading.Thread(target=call, args=(mode,)) for mode in ("sync", "stream")]
    for caller in callers:
        caller.start()
    _wait_for(lambda: _credits(server, key) == 98)  # both accepted and running
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    for caller in callers:
        caller.join(timeout=30)
    # a graceful stop exits 0 (or with the signal, as some servers re-raise it)
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert answers["sync"][0] == 200 and '"success":true' in answers["sync"][1]
    assert answers["stream"][0] == 200 and '"type":"complete"' in answers["stream"][1]


def test_a_queued_generation_keeps_its_attempts_across_restarts(
    server_factory: Any, tmp_path: Any
) -> None:
    """A generation that never started has spent no attempt, however often the
    server is killed or stopped around it (so the max-attempts guard stays exact)."""
    import sqlite3

    # One async worker: the second generation waits in the queue behind the first.
    settings = {"builtin_latency_seconds": 60, "async_workers": 1, "default_concurrency_limit": 2}
    first = server_factory(tmp_path / "data", **settings).start()
    headers = first.headers
    ids = [
        requests.post(
            first.url("/api/v1/generate"),
            json={"prompt": f"in line {n}", "mode": "async"},
            headers=headers,
            timeout=10,
        ).json()["generationId"]
        for n in range(2)
    ]

    def attempts() -> dict[str, tuple[str, int]]:
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / "bananastand.db")) as db:
            rows = db.execute("SELECT id, state, attempts FROM generations").fetchall()
        return {row[0]: (row[1], row[2]) for row in rows}

    assert _wait_for(lambda: attempts()[ids[0]] == ("running", 1))
    assert attempts()[ids[1]] == ("queued", 0)
    first.kill()
    second = server_factory(tmp_path / "data", **settings).start()
    assert _wait_for(lambda: attempts()[ids[0]] == ("running", 2))  # the cut run counts
    second.stop()  # graceful: the running one is handed back, uncounted
    assert attempts() == {ids[0]: ("queued", 1), ids[1]: ("queued", 0)}
    third = server_factory(tmp_path / "data", **settings).start()
    assert _wait_for(lambda: attempts()[ids[0]] == ("running", 2))
    third.kill()
    assert attempts()[ids[1]] == ("queued", 0)
