"""Image store + serve: the local folder against an object store, in one run.

An S3-compatible server (moto, standalone, on 127.0.0.1) stands in for the
bucket: its absolute figures are a Python server's, so read the ratios.

1. Libraries: obstore (what Bananastand uses) against aioboto3, on the same
   server: import time, PUT and GET of a 1024x1024 PNG (aioboto3 only if it is
   installed: `pip install aioboto3`).
2. Store: what `GenerationService._store` costs per image (its size read, the
   image written; thumbnails are made later, at first need), local folder vs
   bucket, beside one plain PUT of the image: storing costs one round trip.
3. Serve: GET of the image URL through the app (ASGI, streamed), local vs
   bucket; and the Python heap's peak while an 8 MiB object streams through,
   against its size (streaming never holds a whole image).

    .venv/bin/python bench/bench_storage.py [--rounds 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.s3: the same moto helper the tests use
sys.path.insert(0, str(ROOT / "src"))

from tests.s3 import S3Server  # noqa: E402


def png_1024() -> bytes:
    from PIL import Image

    noise = Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).resize((1024, 1024))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    return buffer.getvalue()


async def timed(rounds: int, step: Callable[[int], Awaitable[Any]]) -> list[float]:
    await step(-1)  # warm-up (connections, caches)
    times = []
    for index in range(rounds):
        started = time.perf_counter()
        await step(index)
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
    }


# --- 1. libraries --------------------------------------------------------------------


def library_import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(float(out.stdout) * 1000, 1)


async def libraries(server: S3Server, data: bytes, rounds: int) -> dict[str, Any]:
    import obstore
    from obstore.store import S3Store

    results: dict[str, Any] = {}
    bucket = server.bucket()
    store = S3Store(
        bucket,
        endpoint=server.endpoint,
        region="us-east-1",
        access_key_id="bench",
        secret_access_key="bench",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )

    async def ob_get(i: int) -> None:
        result = await obstore.get_async(store, f"k{max(i, 0)}")
        async for _ in result.stream(min_chunk_size=64 * 1024):
            pass

    results["obstore"] = {
        "import_ms": library_import_ms("obstore"),
        "put": summary(await timed(rounds, lambda i: obstore.put_async(store, f"k{i}", data))),
        "get": summary(await timed(rounds, ob_get)),
    }
    try:
        import aioboto3  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        results["aioboto3"] = "not installed"
        return results
    session = aioboto3.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=server.endpoint) as client:

        async def ab_put(i: int) -> None:
            await client.put_object(Bucket=bucket, Key=f"b{i}", Body=data)

        async def ab_get(i: int) -> None:
            answer = await client.get_object(Bucket=bucket, Key=f"b{max(i, 0)}")
            async for _ in answer["Body"].iter_chunks(64 * 1024):
                pass

        results["aioboto3"] = {
            "import_ms": library_import_ms("aioboto3"),
            "put": summary(await timed(rounds, ab_put)),
            "get": summary(await timed(rounds, ab_get)),
        }
    return results


# --- 2 and 3. the server's own paths ------------------------------------------------------


async def through_the_app(
    name: str, settings: dict[str, Any], data: bytes, rounds: int
) -> dict[str, Any]:
    import httpx

    from bananastand.app import create_app
    from bananastand.config import Settings
    from bananastand.container import Services
    from bananastand.storage import image_key

    with tempfile.TemporaryDirectory() as folder:
        config = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=Path(folder),
            public_base_url="http://bench.test",
            demo_account=False,
            **settings,
        )
        services = Services.build(config)
        app = create_app(config, services=services)
        await services.start()
        try:
            service = services.generation
            stored: list[str] = []

            async def store(_: int) -> None:
                stored.append((await service._store(data)).id)

            result: dict[str, Any] = {"store": summary(await timed(rounds, store))}

            async def put_only(i: int) -> None:  # the image alone: one PUT
                await service.storage.put(f"bench/{i}.png", data)

            result["put_image_only"] = summary(await timed(rounds, put_only))
            from datetime import UTC, datetime, timedelta

            expires = datetime.now(UTC) + timedelta(days=1)
            urls = [
                service.signer.url(i, "png", expires)[len("http://bench.test") :] for i in stored
            ]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench.test"
            ) as client:

                async def serve(i: int) -> None:
                    answer = await client.get(urls[max(i, 0)])
                    assert answer.status_code == 200 and len(answer.content) == len(data)

                result["serve"] = summary(await timed(rounds, serve))

                # Peak heap while 8 MiB stream through. Straight through the ASGI app
                # (httpx's ASGI transport would collect the body itself), each piece
                # dropped as it is sent, as a socket would.
                big = os.urandom(8 * 1024 * 1024)
                await service.storage.put(image_key("bigbigbigbigbigbigbigbig", "png"), big)
                url = service.signer.url("bigbigbigbigbigbigbigbig", "png", expires)
                del big
                tracemalloc.start()
                received = await asgi_get(app, url[len("http://bench.test") :])
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                assert received == 8 * 1024 * 1024, received
                result["serve_8mib_peak_heap_mib"] = round(peak / 2**20, 2)
            print(f"  {name}: {result}", flush=True)
            return result
        finally:
            await services.stop()


async def asgi_get(app: Any, path: str) -> int:
    """GET `path` from the ASGI app; the body's length (its pieces not kept)."""
    received = 0
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays: no disconnect
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal received
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        elif message["type"] == "http.response.body":
            received += len(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench.test")],
        "client": ("127.0.0.1", 1),
        "server": ("bench.test", 80),
    }
    await app(scope, receive, send)
    return received


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = png_1024()
    print(f"1024x1024 PNG: {len(data):,} bytes; {args.rounds} rounds each", flush=True)
    server = S3Server().start()
    try:
        report: dict[str, Any] = {"png_bytes": len(data), "rounds": args.rounds}
        report["libraries"] = await libraries(server, data, args.rounds)
        print(f"  libraries: {report['libraries']}", flush=True)
        local = await through_the_app("local folder", {}, data, args.rounds)
        bucket = await through_the_app(
            "object store",
            {**server.settings(server.bucket()), "storage_timeout_seconds": 30},
            data,
            args.rounds,
        )
        report["local"], report["object_store"] = local, bucket
    finally:
        server.stop()

    lib = report["libraries"]
    print("\nratios (p50):")
    if isinstance(lib.get("aioboto3"), dict):
        for op in ("put", "get"):
            ratio = lib["aioboto3"][op]["p50_ms"] / lib["obstore"][op]["p50_ms"]
            print(f"  {op}: aioboto3 / obstore = {ratio:.2f}")
        ratio = lib["aioboto3"]["import_ms"] / max(lib["obstore"]["import_ms"], 0.1)
        print(f"  import: aioboto3 / obstore = {ratio:.0f}")
    for op in ("store", "serve"):
        ratio = bucket[op]["p50_ms"] / local[op]["p50_ms"]
        print(f"  {op}: object store / local folder = {ratio:.2f}")
    added = bucket["store"]["p50_ms"] - local["store"]["p50_ms"]
    trips = added / bucket["put_image_only"]["p50_ms"]
    print(
        f"  the bucket adds {added:.1f} ms to storing an image "
        f"= {trips:.2f} of one PUT of the image"
    )
    print(
        f"  peak heap serving 8 MiB: local {local['serve_8mib_peak_heap_mib']} MiB, "
        f"bucket {bucket['serve_8mib_peak_heap_mib']} MiB"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
