"""`bananastand admin migrate-storage`: a local data folder copied into a bucket
(a real S3 server), each object verified; run again, it copies only what is
missing or different (idempotent, resumable)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bananastand.object_storage import ObjectStorage
from bananastand.server_cli import app
from bananastand.storage import image_key, thumb_key
from tests.s3 import SECRET_KEY, S3Server
from tests.support import png_bytes


def migrate(data_dir: Path, settings: dict[str, Any]) -> tuple[int, str]:
    env = {f"BANANASTAND_{name.upper()}": str(value) for name, value in settings.items()}
    env["BANANASTAND_DATA_DIR"] = str(data_dir)
    result = CliRunner().invoke(app, ["admin", "migrate-storage"], env=env)
    return result.exit_code, result.output


def store(settings: dict[str, Any]) -> ObjectStorage:
    """The bucket through the library the server uses."""
    return ObjectStorage.from_url(
        settings["storage_url"],
        endpoint=settings["storage_endpoint"],
        access_key_id=settings["storage_access_key_id"],
        secret_access_key=settings["storage_secret_access_key"],
    )


def local_folder(root: Path, count: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for index in range(count):
        image_id = f"image{index:04d}abcdefghijklmnop"
        files[image_key(image_id, "png")] = png_bytes((16 + index, 16))
        files[thumb_key(image_id)] = b"thumb %d" % index
    files["references/gen1/0.bin"] = png_bytes((8, 8))
    files["references/gen1/0.json"] = b'{"mime": "image/png", "w": 8, "h": 8}'
    for key, data in files.items():
        path = root / "files" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # A write that never finished: not an object of anyone's.
    (root / "files" / "images" / "ab").mkdir(parents=True)
    (root / "files" / "images" / "ab" / ".x.png.1a2b.tmp").write_bytes(b"half")
    return files


def test_copies_verifies_and_resumes(
    tmp_path: Path, s3_server: S3Server, s3_settings: dict[str, Any]
) -> None:
    files = local_folder(tmp_path, 12)
    bucket = s3_settings["storage_url"].split("/")[2]

    code, output = migrate(tmp_path, s3_settings)
    assert code == 0, output
    assert f"{len(files)} copied, 0 already there, 0 failed" in output
    assert SECRET_KEY not in output
    assert s3_server.keys(bucket) == sorted(f"bananastand/{key}" for key in files)

    # Run again: nothing to do.
    code, output = migrate(tmp_path, s3_settings)
    assert code == 0, output
    assert f"0 copied, {len(files)} already there, 0 failed" in output

    # As if a run had stopped half-way (one object missing, one written short) and
    # the folder had grown meanwhile: only those are copied.
    bucket_store = store(s3_settings)
    missing, short = sorted(files)[0], sorted(files)[1]
    asyncio.run(bucket_store.delete(missing))
    asyncio.run(bucket_store.put(short, b"x"))
    new = image_key("imagenewabcdefghijklmnopq", "png")
    (tmp_path / "files" / new).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "files" / new).write_bytes(b"new image")
    code, output = migrate(tmp_path, s3_settings)
    assert code == 0, output
    assert f"3 copied, {len(files) - 2} already there, 0 failed" in output
    for key, data in files.items():
        assert asyncio.run(bucket_store.get(key)) == data, key


def test_refuses_without_a_bucket_or_a_reachable_store(
    tmp_path: Path, s3_settings: dict[str, Any]
) -> None:
    local_folder(tmp_path, 1)
    code, output = migrate(tmp_path, {})
    assert code == 2 and "BANANASTAND_STORAGE_URL" in output
    from tests.s3 import free_port

    down = {**s3_settings, "storage_endpoint": f"http://127.0.0.1:{free_port()}"}
    code, output = migrate(tmp_path, down)
    assert code == 1 and "run the command again" in output
    assert "Traceback" not in output and SECRET_KEY not in output
    assert os.listdir(tmp_path / "files")  # the source is never touched
