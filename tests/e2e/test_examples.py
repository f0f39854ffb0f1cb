"""The examples in `examples/`, run as a user runs them, against a real server.

They are the public service's client code with only the base URL changed, so
these tests say that such clients work against Bananastand unmodified.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.e2e.conftest import Server
from tests.e2e.scaleout import (
    DEPLOYMENTS,
    deployment_factory,  # noqa: F401
    deployment_server_factory,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(params=DEPLOYMENTS)
def server_factory(request: pytest.FixtureRequest, server_factory: Any) -> Any:
    """Each test that starts a server runs twice: against the embedded server, and
    against a scale-out deployment (1 API process + 1 worker, PostgreSQL, Redis)."""
    return deployment_server_factory(request, server_factory)


def run_example(
    server: Server, *args: str, cwd: Path, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "BANANASTAND_"))}
    env["NB_BASE_URL"] = server.base_url + "/api/v1"
    env["NB_API_KEY"] = key if key is not None else str(server.demo_key)
    command = ["bash", *args] if args[0].endswith(".sh") else [sys.executable, *args]
    command[1] = str(EXAMPLES / command[1])
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    # An example never shows the key, whatever happens.
    if env["NB_API_KEY"]:
        assert env["NB_API_KEY"] not in result.stdout + result.stderr
    return result


def credits(server: Server) -> int:
    response = requests.get(server.url("/api/v1/credits"), headers=server.headers, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["data"]["credits"])


def saved_paths(stdout: str, cwd: Path) -> list[Path]:
    return [cwd / p for p in re.findall(r"^Saved (.+)$", stdout, flags=re.MULTILINE)]


def assert_pngs(paths: list[Path], generation_id: str, count: int) -> None:
    assert [p.name for p in paths] == [f"{generation_id}_{i}.png" for i in range(count)]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (1024, 1024)
            image.load()  # the whole file decodes, not only its header


def test_quickstart_curl(server: Server, tmp_path: Path) -> None:
    result = run_example(server, "quickstart.sh", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["success"] is True
    assert answer["creditsUsed"] == 1
    assert answer["remainingCredits"] == 99 == credits(server)
    assert len(answer["imageUrls"]) == 1
    url = answer["imageUrls"][0]
    assert url.startswith(server.base_url + "/") and url.endswith(".png")
    image = requests.get(url, timeout=10)
    assert image.status_code == 200
    assert image.headers["Content-Type"] == "image/png"
    data = server.record(answer["generationId"])
    assert data["processingStatus"] == "completed"
    assert data["prompt"] == "A cute orange cat sitting on a windowsill"
    assert data["modelUsed"] == "nano-banana"


def test_sync_example_downloads_images(server: Server, tmp_path: Path) -> None:
    result = run_example(server, "sync.py", "images", "a lighthouse at dusk", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Credits used: 2, remaining: 98" in result.stdout
    paths = saved_paths(result.stdout, tmp_path)
    assert len(paths) == 2
    assert all(p.parent == tmp_path / "images" for p in paths)
    generation_id = paths[0].name.split("_")[0]
    assert_pngs(paths, generation_id, 2)
    data = server.record(generation_id)
    assert data["processingStatus"] == "completed"
    assert data["prompt"] == "a lighthouse at dusk"
    assert len(data["outputImageUrls"]) == 2
    assert credits(server) == 98


def test_stream_example_follows_progress(server: Server, tmp_path: Path) -> None:
    result = run_example(server, "stream.py", "streamed", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = re.findall(r"^\[\s*(\d+)%\] (\w+): ", result.stdout, flags=re.MULTILINE)
    assert len(events) >= 3
    progress = [int(p) for p, _ in events]
    assert progress == sorted(progress)
    assert [kind for _, kind in events[:-1]] == ["status"] * (len(events) - 1)
    assert events[-1] == ("100", "complete")
    paths = saved_paths(result.stdout, tmp_path)
    assert len(paths) == 1 and paths[0].parent == tmp_path / "streamed"
    generation_id = paths[0].name.split("_")[0]
    assert_pngs(paths, generation_id, 1)
    assert server.record(generation_id)["processingStatus"] == "completed"
    assert "Credits used: 1, remaining: 99" in result.stdout
    assert credits(server) == 99


def test_async_example_polls_until_done(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(builtin_latency_seconds=1.5).start()
    result = run_example(server, "async_poll.py", "polled", "a red bicycle", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    statuses = re.findall(r"^Status: (\w+)$", result.stdout, flags=re.MULTILINE)
    assert statuses[0] == "processing"  # the loop really waited
    assert statuses[-1] == "completed"
    assert set(statuses) == {"processing", "completed"}
    started = re.search(r"^Started (\S+) \(credits used: 2\)$", result.stdout, flags=re.MULTILINE)
    assert started, result.stdout
    generation_id = started.group(1)
    paths = saved_paths(result.stdout, tmp_path)
    assert all(p.parent == tmp_path / "polled" for p in paths)
    assert_pngs(paths, generation_id, 2)
    assert credits(server) == 98


def test_examples_fail_loudly(server_factory: Any, tmp_path: Path) -> None:
    """Failures end with a non-zero exit and the server's message, and no files."""
    server = server_factory(builtin_failure_rate=1.0).start()
    for example in ("sync.py", "stream.py", "async_poll.py"):
        result = run_example(server, example, "failed", cwd=tmp_path)
        assert result.returncode != 0, (example, result.stdout)
        assert "simulated failure" in result.stderr, (example, result.stderr)
        assert not (tmp_path / "failed").exists()
    assert credits(server) == 100  # failed generations are refunded

    result = run_example(server, "sync.py", "failed", cwd=tmp_path, key="nb_not_a_real_key")
    assert result.returncode != 0
    assert "API key" in result.stderr, result.stderr
    result = run_example(server, "quickstart.sh", cwd=tmp_path, key="nb_not_a_real_key")
    assert result.returncode != 0
    assert json.loads(result.stdout)["type"] == "unauthorized"
    result = run_example(server, "quickstart.sh", cwd=tmp_path, key="")
    assert result.returncode != 0
    assert "NB_API_KEY" in result.stderr
