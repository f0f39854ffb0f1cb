"""A real `bananastand serve` process on a free port, started the way the
README tells a user to, with the demo key read from its console."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.settings = settings
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.demo_key: str | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BANANASTAND_")}
        env.update(
            BANANASTAND_DATA_DIR=str(self.data_dir),
            BANANASTAND_PORT=str(self.port),
            BANANASTAND_SHUTDOWN_GRACE_SECONDS="1",
        )
        for name, value in self.settings.items():
            env[f"BANANASTAND_{name.upper()}"] = str(value)
        return env

    def start(self, timeout: float = 30.0) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bananastand", "serve"],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(out: IO[str]) -> None:
            with out:  # closed when the process ends (no ResourceWarning)
                for line in out:
                    self.output.append(line)
                    lines.put(line)
            lines.put(None)

        assert self.process.stdout is not None
        threading.Thread(target=pump, args=(self.process.stdout,), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("server did not start:\n" + "".join(self.output)) from None
            if line is None:
                raise AssertionError("server exited:\n" + "".join(self.output))
            match = re.search(r"^\s+(nb_[A-Za-z0-9_-]+)\s*$", line)
            if match:
                self.demo_key = match.group(1)
            if "Listening on http://" in line:
                return self

    @property
    def headers(self) -> dict[str, str]:
        assert self.demo_key, "no demo key was printed"
        return {"Authorization": f"Bearer {self.demo_key}"}

    def url(self, path: str) -> str:
        return self.base_url + path

    def record(self, generation_id: str) -> dict[str, Any]:
        """`GET /api/v1/generate?id=` with the demo key: the record's `data`."""
        response = requests.get(
            self.url("/api/v1/generate"),
            params={"id": generation_id},
            headers=self.headers,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bananastand", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def make(data_dir: Path | None = None, **settings: Any) -> Server:
        server = Server(data_dir or tmp_path / f"server{len(servers)}", **settings)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(server_factory: Any) -> Server:
    return server_factory().start()  # type: ignore[no-any-return]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
