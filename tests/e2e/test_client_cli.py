"""The Python client and the `bananastand generate/models/credits/poll`
commands against a real server process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bananastand.client import AuthenticationError, Client, NotFoundError
from tests.e2e.conftest import Server


@pytest.fixture
def client(server: Server) -> Client:
    assert server.demo_key
    with Client(server.base_url, server.demo_key, timeout=60) as nb:
        yield nb  # type: ignore[misc]


def cli(server: Server, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANANASTAND_")}
    env["BANANASTAND_URL"] = server.base_url
    env["BANANASTAND_API_KEY"] = key if key is not None else (server.demo_key or "")
    return subprocess.run(
        [sys.executable, "-m", "bananastand", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_png(path: Path) -> None:
    assert path.exists(), path
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        assert image.format == "PNG"
        assert image.size[0] > 0


# --- the Python client -----------------------------------------------------------------


def test_client_sync_generate_and_download(client: Client, tmp_path: Path) -> None:
    before = client.credits()
    result = client.generate("A cute orange cat", quantity=2, seed=1)
    assert result.success and not result.warning
    assert len(result.image_urls) == 2
    assert result.remaining_credits == before - result.credits_used  # type: ignore[operator]
    paths = client.download(result, tmp_path)
    assert [p.name for p in paths] == [
        f"{result.generation_id}_0.png",
        f"{result.generation_id}_1.png",
    ]
    for path in paths:
        assert_png(path)
    assert client.credits() == result.remaining_credits


def test_client_stream_ends_with_one_complete(client: Client, tmp_path: Path) -> None:
    events = list(client.stream("A lighthouse at dusk"))
    assert [e.type for e in events].count("complete") == 1
    assert events[-1].type == "complete"
    progress = [e.progress for e in events]
    assert progress == sorted(progress) and progress[-1] == 100
    data = events[-1].data
    assert data is not None and data.success and data.generation_id and data.image_urls
    [path] = client.download(events[-1], tmp_path)
    assert path.name == f"{data.generation_id}_0.png"
    assert_png(path)


def test_client_async_and_wait(client: Client) -> None:
    accepted = client.generate("A castle on a hill", mode="async")
    assert accepted.is_async and accepted.success
    record = client.wait(accepted.generation_id, timeout=60)
    assert record.id == accepted.generation_id
    assert record.processing_status == "completed"
    assert len(record.output_image_urls) == 1
    assert record.prompt == "A castle on a hill"
    with pytest.raises(NotFoundError):
        client.get("no-such-generation")


def test_client_models_and_credits(client: Client, server: Server) -> None:
    models = client.models()
    assert "nano-banana" in {m.name for m in models}
    assert all(m.credits_cost >= 0 for m in models)
    assert client.credits() == 100
    with Client(server.base_url, "nb_wrong") as bad, pytest.raises(AuthenticationError) as info:
        bad.credits()
    assert info.value.status == 401 and "nb_wrong" not in str(info.value)


def test_client_resume_history_cancel_and_idempotency(client: Client) -> None:
    events = list(client.stream("A kite", previews=False))
    ids = [e.id for e in events]
    assert ids == list(range(len(events)))  # numbered from 0, one by one
    assert all(e.data is None or e.data.preview_image is None for e in events)
    generation_id = events[-1].data.generation_id  # type: ignore[union-attr]
    assert generation_id
    replayed = list(client.resume(generation_id))
    assert replayed[-1].type == "complete" and replayed[-1].id == ids[-1]
    assert list(client.resume(generation_id, last_event_id=ids[-1])) == []

    before = client.credits()
    first = client.generate("A kite", mode="async", idempotency_key="kite-1")
    again = client.generate("A kite", mode="async", idempotency_key="kite-1")
    assert again.generation_id == first.generation_id
    client.wait(first.generation_id, timeout=60)
    assert client.credits() == before - 1  # charged once

    page = client.list_generations(limit=1)
    assert [r.id for r in page.records] == [first.generation_id] and page.next_before
    assert [r.id for r in client.iter_generations(page_size=1)] == [
        first.generation_id,
        generation_id,
    ]
    answer = client.cancel(first.generation_id)
    assert not answer.cancelled and answer.record.processing_status == "completed"


# --- the CLI -----------------------------------------------------------------------------


def test_cli_generate_sync_saves_images(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = cli(server, "generate", "A red apple", "--quantity", "2", "--out", str(out))
    assert run.returncode == 0, run.stderr
    paths = [Path(line) for line in run.stdout.split()]
    assert len(paths) == 2
    for path in paths:
        assert path.parent == out
        assert_png(path)
    assert server.demo_key not in run.stdout + run.stderr


def test_cli_generate_stream_with_a_local_reference(server: Server, tmp_path: Path) -> None:
    ref = tmp_path / "ref.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(ref)
    run = cli(
        server,
        "generate",
        "The same, in blue",
        "--mode",
        "stream",
        "--ref",
        str(ref),
        "--ratio",
        "16:9",
        "--out",
        str(tmp_path),
    )
    assert run.returncode == 0, run.stderr
    [path] = [Path(line) for line in run.stdout.split()]
    assert_png(path)
    assert server.demo_key not in run.stdout + run.stderr


def test_cli_generate_async_then_poll(server: Server, tmp_path: Path) -> None:
    run = cli(server, "generate", "A boat", "--mode", "async", "--no-wait")
    assert run.returncode == 0, run.stderr
    generation_id = run.stdout.strip()
    assert generation_id
    polled = cli(server, "poll", generation_id, "--wait", "--out", str(tmp_path))
    assert polled.returncode == 0, polled.stderr
    [path] = [Path(line) for line in polled.stdout.split()]
    assert path.name == f"{generation_id}_0.png"
    assert_png(path)
    waited = cli(server, "generate", "A boat", "--mode", "async", "--out", str(tmp_path))
    assert waited.returncode == 0, waited.stderr
    assert_png(Path(waited.stdout.strip()))
    assert server.demo_key not in "".join(r.stdout + r.stderr for r in (run, polled, waited))


def test_cli_models_and_credits(server: Server) -> None:
    models = cli(server, "models")
    assert models.returncode == 0, models.stderr
    assert "nano-banana" in models.stdout
    credits = cli(server, "credits")
    assert credits.returncode == 0, credits.stderr
    assert credits.stdout.strip() == "100"
    assert server.demo_key not in credits.stdout + credits.stderr


def test_cli_history_cancel_and_idempotency_key(server: Server) -> None:
    runs = [
        cli(server, "generate", "A bell", "--mode", "async", "--no-wait", "--idempotency-key", "b")
        for _ in range(2)
    ]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    generation_id = runs[0].stdout.strip()
    assert runs[1].stdout.strip() == generation_id  # the same generation, not a second one
    assert cli(server, "poll", generation_id, "--wait").returncode == 0
    history = cli(server, "history", "--limit", "5")
    assert history.returncode == 0, history.stderr
    [line] = history.stdout.splitlines()
    assert line.split("\t")[:3] == [generation_id, "completed", "1"]
    cancelled = cli(server, "cancel", generation_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "already completed" in cancelled.stdout
    assert server.demo_key not in history.stdout + cancelled.stdout + cancelled.stderr


def test_cli_errors(server: Server, tmp_path: Path) -> None:
    bad = cli(server, "credits", key="nb_notarealkey")
    assert bad.returncode != 0
    assert bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.stderr
    assert "nb_notarealkey" not in bad.stdout + bad.stderr
    bad_gen = cli(server, "generate", "x", "--out", str(tmp_path), key="nb_notarealkey")
    assert bad_gen.returncode != 0 and bad_gen.stderr.startswith("error: ")
    assert "nb_notarealkey" not in bad_gen.stdout + bad_gen.stderr
    missing = cli(server, "poll", "no-such-generation")
    assert missing.returncode != 0 and missing.stderr.startswith("error: ")
    no_key = cli(server, "credits", key="")
    assert no_key.returncode != 0 and "BANANASTAND_API_KEY" in no_key.stderr
    no_ref = cli(server, "generate", "x", "--ref", str(tmp_path / "nope.png"))
    assert no_ref.returncode != 0 and "reference image not found" in no_ref.stderr
