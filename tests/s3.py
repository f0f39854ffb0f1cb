"""A real S3 wire protocol for tests: moto's server in standalone mode, a process
of its own on 127.0.0.1, reached through the same library the code uses
(obstore). Buckets are made with one plain `PUT /{bucket}` (what any S3 client
sends); a test gets a bucket of its own, or its module does.

    server = S3Server().start()
    settings = server.settings(server.bucket())   # storage_url, endpoint, keys
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import httpx

ACCESS_KEY = "bananastand-test"
SECRET_KEY = "s3-secret-never-shown-" + "x" * 16  # tests assert it appears nowhere


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> S3Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.answers():  # bounded: the server's port opening, not a sleep
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"moto server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            return httpx.get(self.endpoint + "/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def bucket(self, name: str | None = None) -> str:
        name = name or f"bs-{secrets.token_hex(6)}"
        response = httpx.put(f"{self.endpoint}/{name}", timeout=10)
        assert response.status_code == 200, response.text
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The bucket's keys (ListObjectsV2 over plain HTTP: what is really there)."""
        import re

        keys: list[str] = []
        token = ""
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            response = httpx.get(f"{self.endpoint}/{bucket}", params=params, timeout=10)
            assert response.status_code == 200, response.text
            keys += re.findall(r"<Key>([^<]+)</Key>", response.text)
            found = re.search(r"<NextContinuationToken>([^<]+)<", response.text)
            if not found:
                return sorted(keys)
            token = found.group(1)

    def settings(self, bucket: str, prefix: str = "bananastand") -> dict[str, Any]:
        """The `Settings` values that put a server's files in `bucket`."""
        return {
            "storage_url": f"s3://{bucket}/{prefix}",
            "storage_endpoint": self.endpoint,
            "storage_access_key_id": ACCESS_KEY,
            "storage_secret_access_key": SECRET_KEY,
            "storage_timeout_seconds": 5.0,
        }
