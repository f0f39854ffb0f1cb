"""Scale-out deployments for end-to-end tests: real `bananastand serve` (API
only) and `bananastand worker` processes sharing one PostgreSQL database, one
Redis prefix, one bucket and one signing secret, and nothing else: each process
has a data folder of its own (as on machines of their own), and images and
reference images live in the bucket (an S3 server, `tests.s3`). A deployment
made with `s3=None` shares one data folder instead (one machine, no bucket).

    deployment = deployment_factory(apis=2, workers=2, builtin_latency_seconds=2)
    a, b = deployment.apis            # `Server`s: url(), headers, cli(), kill(), stop()
    w1, w2 = deployment.workers       # `Worker`s: kill(), terminate(), stop(), start()

The first API process creates the demo account and prints its key; every
process of the deployment is then given that key, so `headers` works on each.
Tests import the fixture: `from tests.e2e.scaleout import deployment_factory  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.e2e.conftest import Server, free_port
from tests.s3 import S3Server
from tests.support import create_database, drop_database, pg_url

T = TypeVar("T")

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_URL = "redis://127.0.0.1:6379/0"

# Fast failure detection for tests; see the `Settings` fields of the same names.
FAST_SETTINGS: dict[str, Any] = {
    "worker_heartbeat_seconds": 1,
    "worker_stall_seconds": 4,
    "janitor_interval_seconds": 0.5,
    "slot_lease_seconds": 5,
    "shutdown_grace_seconds": 2,
    "log_level": "info",
}


# For deployments with no fault to recover from: a janitor that seldom runs. (Each of
# its rounds may revive the slot lease of a generation ending at that moment, see
# test_scaleout.test_janitor_does_not_revive_a_released_slot; tests that make
# generations back to back would fail now and then.)
NO_FAULTS: dict[str, Any] = {"janitor_interval_seconds": 30, "slot_lease_seconds": 60}


def wait_for(check: Callable[[], T | None], *, timeout: float = 20.0, every: float = 0.05) -> T:
    """Poll `check` until it returns something truthy (bounded); fail otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        time.sleep(every)


def _env(data_dir: Path, settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANANASTAND_")}
    env["BANANASTAND_DATA_DIR"] = str(data_dir)
    for name, value in settings.items():
        env[f"BANANASTAND_{name.upper()}"] = str(value)
    return env


class ApiProcess(Server):
    """`bananastand serve` of a deployment; the demo key is the deployment's."""

    def __init__(self, data_dir: Path, name: str, **settings: Any) -> None:
        super().__init__(data_dir, **settings)
        self.name = name
        self.shared_key: str | None = None

    def start(self, timeout: float = 30.0) -> ApiProcess:
        super().start(timeout)
        if self.demo_key is None:
            self.demo_key = self.shared_key
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        return f"<api {self.name} {self.base_url}>"


class Worker:
    """`bananastand worker`, its stdout and stderr collected line by line."""

    READY = "Bananastand worker running"

    def __init__(self, data_dir: Path, name: str, **settings: Any) -> None:
        self.data_dir = data_dir
        self.name = name
        self.settings = settings
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def env(self) -> dict[str, str]:
        return _env(self.data_dir, self.settings)

    def start(self, timeout: float = 30.0) -> Worker:
        assert not self.running, f"{self.name} is already running"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bananastand", "worker"],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        process = self.process

        def pump() -> None:
            assert process.stdout is not None
            with process.stdout as out:  # closed when the process ends (no ResourceWarning)
                for line in out:
                    self.output.append(line)
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"pump-{self.name}").start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"worker {self.name} did not start:\n" + self.text) from None
            if line is None:
                raise AssertionError(f"worker {self.name} exited:\n" + self.text)
            if self.READY in line:
                return self

    @property
    def text(self) -> str:
        return "".join(self.output)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, without waiting: the worker's graceful shutdown begins."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        self.terminate()
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def mentions(self, text: str) -> bool:
        return text in self.text

    def __repr__(self) -> str:
        return f"<worker {self.name}>"


class Deployment:
    """One scale-out deployment: N API processes and M workers on a fresh database."""

    def __init__(
        self,
        base: Path,
        template: str,
        *,
        apis: int = 2,
        workers: int = 2,
        redis_url: str = REDIS_URL,
        s3: S3Server | None = None,
        **settings: Any,
    ) -> None:
        self.base = base
        self.s3 = s3
        self.bucket = s3.bucket() if s3 is not None else None
        self.database = create_database(template)
        self.database_url = pg_url(self.database)
        self.redis_url = redis_url
        self.redis_prefix = f"bstest-{secrets.token_hex(6)}"
        values: dict[str, Any] = {
            **FAST_SETTINGS,
            "database_url": self.database_url,
            "redis_url": redis_url,
            "redis_prefix": self.redis_prefix,
            "signing_secret": secrets.token_urlsafe(32),
        }
        if s3 is not None and self.bucket is not None:
            values.update(s3.settings(self.bucket))
        values.update(settings)
        self.settings = values
        self.demo_key: str | None = None
        self.account_ids: dict[str, str] = {}  # key -> account id, of create_account()
        self.apis: list[ApiProcess] = []
        for index in range(apis):
            api = ApiProcess(self.folder(f"api{index}"), f"api{index}", **self.settings)
            if index == 0 and "public_base_url" not in settings:
                # What a load balancer in front of the API processes would be: the URL
                # every process (workers too) builds image URLs from.
                self.settings["public_base_url"] = api.base_url
            self.apis.append(api)
        for api in self.apis:
            api.settings = {**self.settings}
        self.workers: list[Worker] = [
            Worker(self.folder(f"worker{index}"), f"worker{index}", **self.settings)
            for index in range(workers)
        ]

    def folder(self, name: str) -> Path:
        """The data folder of process `name`: its own with a bucket, else one for all."""
        return self.base / (f"data-{name}" if self.s3 is not None else "data")

    def stored(self, prefix: str = "") -> list[str]:
        """Keys in the deployment's bucket (under the servers' prefix)."""
        assert self.s3 is not None and self.bucket is not None
        return self.s3.keys(self.bucket, f"bananastand/{prefix}")

    def files(self) -> list[Path]:
        """Every file the processes wrote in their data folders."""
        return sorted(path for path in self.base.rglob("*") if path.is_file())

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> Deployment:
        """The first API process (it creates the demo account and prints its key)
        with the workers, then the other API processes."""
        first, *others = self.apis
        _start_all([first.start, *(worker.start for worker in self.workers)])
        self.demo_key = first.demo_key
        assert self.demo_key, "the first API process printed no demo key:\n" + "".join(first.output)
        for api in self.apis:
            api.shared_key = self.demo_key
        _start_all([api.start for api in others])
        for api in others:
            assert api.demo_key == self.demo_key, "only the first API process prints a key"
        return self

    def add_worker(self, start: bool = True, **overrides: Any) -> Worker:
        name = f"worker{len(self.workers)}"
        worker = Worker(self.folder(name), name, **{**self.settings, **overrides})
        self.workers.append(worker)
        return worker.start() if start else worker

    def close(self) -> None:
        processes = [*self.workers, *self.apis]
        for process in processes:
            with contextlib.suppress(Exception):
                _signal(process.process, signal.SIGTERM)
        deadline = time.monotonic() + 8
        for process in processes:
            with contextlib.suppress(Exception):
                if process.process is not None:
                    process.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in processes:
            with contextlib.suppress(Exception):
                _signal(process.process, signal.SIGKILL)
                if process.process is not None:
                    process.process.wait(timeout=10)
        with contextlib.suppress(Exception):
            drop_database(self.database)
        with contextlib.suppress(Exception):
            _drop_redis_keys(self.redis_url, self.redis_prefix)
        shutil.rmtree(self.base, ignore_errors=True)

    # --- convenience ----------------------------------------------------------------
    @property
    def headers(self) -> dict[str, str]:
        assert self.demo_key
        return auth(self.demo_key)

    def create_account(self, *, credits: int = 100, concurrency_limit: int | None = None) -> str:
        """A fresh account with API access; its key. (Straight into the database,
        as `bananastand admin` would, without paying for a CLI process.)"""
        from bananastand.accounts import Accounts
        from bananastand.billing import Billing
        from bananastand.db import Database

        async def make() -> str:
            db = Database(self.database_url)
            try:
                accounts = Accounts(db, max_keys=5)
                account = await accounts.create(
                    email=f"user-{secrets.token_hex(4)}@example.test",
                    api_access=True,
                    concurrency_limit=concurrency_limit,
                )
                if credits:
                    billing = Billing(db, threshold=1000, currency="CNY")
                    await billing.grant(account.id, credits, reason="test credits")
                secret = (await accounts.create_key(account.id, name="test")).secret
                self.account_ids[secret] = account.id
                return secret
            finally:
                await db.close()

        # A thread of its own: the caller may be inside a running event loop.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, make()).result()

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of one SQL statement on the deployment's database."""
        import psycopg

        conninfo = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{self.database}"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def ledger(self, generation_id: str) -> list[tuple[int, str]]:
        """(amount, reason) of the ledger entries of one generation, in order."""
        rows = self.query(
            "SELECT amount, reason FROM ledger_entries WHERE generation_id = %s ORDER BY id",
            generation_id,
        )
        return [(int(amount), str(reason)) for amount, reason in rows]

    def attempts(self, generation_id: str) -> int:
        ((attempts,),) = self.query("SELECT attempts FROM generations WHERE id = %s", generation_id)
        return int(attempts)

    def running_worker(self, generation_id: str, timeout: float = 15.0) -> Worker:
        """The live worker whose log shows it started the generation's job."""

        def find() -> Worker | None:
            for worker in self.workers:
                if worker.running and _started_job(worker.text, generation_id):
                    return worker
            return None

        return wait_for(find, timeout=timeout)

    def logs(self) -> str:
        parts = []
        for process in [*self.apis, *self.workers]:
            parts.append(f"----- {process.name} -----\n" + "".join(process.output))
        return "\n".join(parts)


def _started_job(text: str, generation_id: str) -> bool:
    """procrastinate logs `Starting job …(generation_id='…')` at INFO."""
    return any("Starting job" in line and generation_id in line for line in text.splitlines())


def _signal(process: subprocess.Popen[str] | None, signum: int) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signum)


def _start_all(starters: list[Callable[[], Any]]) -> None:
    if len(starters) == 1:
        starters[0]()
    elif starters:
        with ThreadPoolExecutor(len(starters)) as pool:
            for future in [pool.submit(start) for start in starters]:
                future.result()


def _drop_redis_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --- infrastructure checks -----------------------------------------------------------


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_services() -> None:
    """Skip (with the reason) only when PostgreSQL or Redis truly is not there."""
    if not _reachable(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")


DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def deployment_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[DeploymentFactory]:
    """`deployment_factory(apis=2, workers=2, start=True, shared_disk=False, **settings)`;
    everything is stopped and the database dropped at teardown. Logs are printed on
    failure. Processes keep their files in a bucket unless `shared_disk`."""
    require_services()
    template = request.getfixturevalue("pg_template")
    made: list[Deployment] = []

    def make(
        apis: int = 2,
        workers: int = 2,
        *,
        start: bool = True,
        shared_disk: bool = False,
        **settings: Any,
    ) -> Deployment:
        s3 = None if shared_disk else request.getfixturevalue("s3_server")
        deployment = Deployment(
            tmp_path / f"deployment{len(made)}",
            template,
            apis=apis,
            workers=workers,
            s3=s3,
            **settings,
        )
        made.append(deployment)
        return deployment.start() if start else deployment

    yield make
    for deployment in made:
        # Shown by pytest only when the test failed.
        print(deployment.logs())
        deployment.close()


# --- a private Redis, to restart under a deployment ------------------------------------


class RedisServer:
    """`redis-server` on a free port, nothing kept on disk: a restart empties it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip("redis-server is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, timeout=timeout)
        return self

    def ping(self) -> bool:
        import redis

        try:
            with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                return bool(client.ping())
        except Exception:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def keys(self, pattern: str = "*") -> list[str]:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=2)
        try:
            return [k.decode() for k in client.scan_iter(match=pattern)]
        finally:
            client.close()


# --- the HTTP API, as a client sees it ----------------------------------------------------


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def generate(api: Server, key: str, body: dict[str, Any], **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    return requests.post(api.url("/api/v1/generate"), json=body, headers=auth(key), **kwargs)


def credits(api: Server, key: str) -> int:
    response = requests.get(api.url("/api/v1/credits"), headers=auth(key), timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["data"]["credits"])


def record(api: Server, key: str, generation_id: str) -> dict[str, Any]:
    response = requests.get(
        api.url("/api/v1/generate"), params={"id": generation_id}, headers=auth(key), timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def settled(api: Server, key: str, generation_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll GET /generate?id= until the record is completed or failed."""

    def check() -> dict[str, Any] | None:
        data = record(api, key, generation_id)
        return data if data["processingStatus"] in ("completed", "failed") else None

    return wait_for(check, timeout=timeout, every=0.1)


def events(response: requests.Response) -> Iterator[dict[str, Any]]:
    """The `data:` events of an event stream as they arrive (comments skipped)."""
    for raw in response.iter_lines():
        line = raw.decode()
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def accepted_when_free(
    api: Server, key: str, body: dict[str, Any] | None = None, timeout: float = 8.0
) -> requests.Response:
    """POST until the account's slot is free (429 retried, bounded); the answer. The
    default bound is the lease of FAST_SETTINGS and some: a slot is never held longer."""

    def attempt() -> requests.Response | None:
        response = generate(api, key, body or {"prompt": "the slot is free"})
        return None if response.status_code == 429 else response

    response = wait_for(attempt, timeout=timeout, every=0.1)
    assert response.status_code == 200, response.text
    return response


def via(api: Server, url: str) -> str:
    """An image URL (built from the deployment's public base URL) on another API process."""
    path = url.split("/images/", 1)[1]
    return api.url("/images/" + path)


# --- the e2e suites, run against a deployment too -------------------------------------------

DEPLOYMENTS = ("embedded", "scale-out")


class _PendingDeployment:
    """Stands where `server_factory(...)` returns an unstarted `Server`: `start()`
    brings up 1 API process + 1 worker and returns the API process."""

    def __init__(self, start: Callable[[], Deployment]) -> None:
        self._start = start

    def start(self) -> ApiProcess:
        return self._start().apis[0]


def deployment_server_factory(request: pytest.FixtureRequest, embedded: Any) -> Any:
    """For a module that overrides `server_factory` with `params=DEPLOYMENTS`:
    the embedded factory itself, or one whose servers are scale-out deployments."""
    if request.param == "embedded":
        return embedded
    make_deployment = request.getfixturevalue("deployment_factory")

    def make(data_dir: Path | None = None, **settings: Any) -> _PendingDeployment:
        if data_dir is not None:
            raise NotImplementedError("a scale-out deployment has a data folder of its own")
        for name, value in NO_FAULTS.items():
            settings.setdefault(name, value)
        return _PendingDeployment(lambda: make_deployment(apis=1, workers=1, **settings))

    return make
