"""End-to-end API benchmark against a real `bananastand serve` process.

Starts a server on a free port with a fresh data folder, raises the demo
account's concurrency limit, then measures, side by side in one run:
  - GET /api/v1/credits (auth + ledger sum) latency and throughput,
  - POST /api/v1/generate throughput in sync, stream and async modes
    (built-in renderer, 1024x1024 PNG), with N concurrent clients.
Prints medians and ratios. Usage: python bench/bench_api.py [--clients 8] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def start_server(data_dir: str) -> tuple[subprocess.Popen[str], str, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(
        os.environ,
        BANANASTAND_DATA_DIR=data_dir,
        BANANASTAND_PORT=str(port),
        BANANASTAND_LOG_LEVEL="warning",
        BANANASTAND_DEMO_CREDITS="1000000",
        BANANASTAND_ASYNC_QUEUE_SIZE="100000",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bananastand", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    key = ""
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"^\s+(nb_[A-Za-z0-9_-]+)\s*$", line)
        if match:
            key = match.group(1)
        if "Listening on http://" in line:  # the socket is open
            break
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bananastand",
            "admin",
            "set-limit",
            "demo@bananastand.local",
            "1000",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(base + "/healthz", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    return process, base, key


def run(label: str, clients: int, seconds: float, call) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                started = time.perf_counter()
                call(session)
                latencies.append(time.perf_counter() - started)

    begun = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(worker)
    elapsed = time.monotonic() - begun
    rate = len(latencies) / elapsed
    median = statistics.median(latencies) * 1000
    print(f"{label:<28} {rate:8.1f} req/s   median {median:7.1f} ms   n={len(latencies)}")
    return rate, median


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        process, base, key = start_server(data_dir)
        headers = {"Authorization": f"Bearer {key}"}
        try:

            def credits(s: requests.Session) -> None:
                assert s.get(base + "/api/v1/credits", headers=headers, timeout=30).ok

            def generate(mode: str):  # type: ignore[no-untyped-def]
                def call(s: requests.Session) -> None:
                    r = s.post(
                        base + "/api/v1/generate",
                        headers=headers,
                        timeout=60,
                        json={"prompt": "benchmark", "mode": mode},
                    )
                    assert r.ok, r.text
                    _ = r.content

                return call

            results = {
                "GET /credits": run("GET /credits", args.clients, args.seconds, credits),
                "POST sync": run(
                    "POST generate sync", args.clients, args.seconds, generate("sync")
                ),
                "POST stream": run(
                    "POST generate stream", args.clients, args.seconds, generate("stream")
                ),
                "POST async (accept)": run(
                    "POST generate async (accept)", args.clients, args.seconds, generate("async")
                ),
            }
            sync_rate = results["POST sync"][0]
            print("\nratios (req/s relative to sync generation, same run):")
            for label, (rate, _) in results.items():
                print(f"  {label:<24} {rate / sync_rate:6.2f}x")
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
