"""What every benchmark here shares: starting servers, driving wrk, and reading a
server's CPU time and memory from /proc.

CPU is the server process tree's utime + stime (from /proc/PID/stat) before and
after a load run, divided by the requests answered: what one request cost the
server, whatever else the (noisy, shared) machine was doing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process and its descendants have used so far."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Server:
    """A server process started for a benchmark; its output is kept for errors."""

    name: str
    process: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    name: str,
    command: Sequence[str],
    *,
    url: str,
    ready_path: str = "/",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    wait_for_line: str | None = None,
    timeout: float = 120.0,
) -> Server:
    """Start a server and wait until `url + ready_path` answers (any HTTP status)."""
    process = subprocess.Popen(
        list(command),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(name, process, url)
    seen = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.output.append(line)
            if wait_for_line and wait_for_line in line:
                seen.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{''.join(server.output[-40:])}")
        if wait_for_line is None or seen.is_set():
            try:
                urllib.request.urlopen(url + ready_path, timeout=2).close()
                return server
            except urllib.error.HTTPError:
                return server
            except OSError:
                pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not start:\n{''.join(server.output[-40:])}")


def uvicorn(name: str, app: str, *, python: str = sys.executable, cwd: Path) -> Server:
    """A peer served the way uvicorn serves by default (one process, httptools, uvloop)."""
    port = free_port()
    return start(
        name,
        [python, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"],
        url=f"http://127.0.0.1:{port}",
        cwd=cwd,
    )


def granian(name: str, app: str, *, cwd: Path) -> Server:
    """A peer served by Granian (the server `bananastand serve` embeds), one worker."""
    port = free_port()
    return start(
        name,
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "asgi",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            app,
        ],
        url=f"http://127.0.0.1:{port}",
        cwd=cwd,
    )


@dataclass
class Load:
    """What one wrk run asks for."""

    path: str
    method: str = "GET"
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    label: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_ms: float  # server CPU per request

    def as_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def _lua(load: Load) -> str:
    lines = [f"wrk.method = {json.dumps(load.method)}"]
    if load.body is not None:
        lines.append(f"wrk.body = {json.dumps(load.body)}")
    for name, value in load.headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def wrk(
    server: Server,
    load: Load,
    *,
    label: str,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> Result:
    """Drive `server` with wrk for `seconds`; CPU per request from the server's tree."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(load))
    try:
        before = cpu_seconds(server.pid)
        run = subprocess.run(
            [
                "wrk",
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "--latency",
                "-s",
                script.name,
                server.url + load.path,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        after = cpu_seconds(server.pid)
    finally:
        os.unlink(script.name)
    out = run.stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return Result(
        label=label,
        connections=connections,
        rps=rps,
        p50_ms=p50,
        p99_ms=p99,
        requests=requests,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in socket_errors.groups()) if socket_errors else 0,
        cpu_ms=1000 * (after - before) / max(1, requests),
    )


def http_json(
    url: str, *, method: str = "GET", body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
