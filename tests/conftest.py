"""Shared fixtures: settings on a temporary folder, the app over ASGI, accounts
with keys. End-to-end fixtures that start a real server live in `tests/e2e`."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bananastand.app import create_app
from bananastand.config import Settings
from bananastand.services import Services
from tests.s3 import S3Server


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "public_base_url": "https://images.example.test",
        "demo_account": False,
        "shutdown_grace_seconds": 0.0,
        "stream_keepalive_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Api:
    """The app over ASGI, with its services, for tests that need no real socket."""

    client: httpx.AsyncClient
    services: Services

    async def account(
        self,
        *,
        credits: int = 100,
        api_access: bool = True,
        concurrency_limit: int | None = None,
        email: str | None = None,
        is_pro: bool = False,
    ) -> Key:
        import secrets

        account = await self.services.accounts.create(
            email=email or f"user-{secrets.token_hex(4)}@example.test",
            api_access=api_access,
            concurrency_limit=concurrency_limit,
            is_pro=is_pro,
        )
        if credits:
            await self.services.billing.grant(account.id, credits, reason="test credits")
        created = await self.services.accounts.create_key(account.id, name="test")
        return Key(account.id, created.secret)

    async def balance(self, key: Key) -> int:
        return await self.services.billing.balance(key.account_id)

    async def generate(self, key: Key, **body: Any) -> httpx.Response:
        return await self.client.post("/api/v1/generate", json=body, headers=key.headers)

    async def poll(self, key: Key, generation_id: str) -> dict[str, Any]:
        response = await self.client.get(
            "/api/v1/generate", params={"id": generation_id}, headers=key.headers
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    async def wait_settled(self, key: Key, generation_id: str) -> dict[str, Any]:
        """Wait for the generation's run to end (no polling loop: the runner says)."""
        await self.services.generation.dispatcher.wait(generation_id)
        return await self.poll(key, generation_id)

    async def download(self, url: str) -> httpx.Response:
        base = self.services.settings.base_url
        assert url.startswith(base + "/"), url
        return await self.client.get(url[len(base) :])

    async def ledger_sum(self, key: Key) -> int:
        return sum(
            e.amount for e in await self.services.billing.ledger(key.account_id, limit=10**6)
        )


@dataclass(frozen=True)
class Key:
    account_id: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


ApiFactory = Callable[..., Any]


@pytest.fixture
async def api_factory(
    tmp_path: Path, deployment: str, request: pytest.FixtureRequest
) -> AsyncIterator[ApiFactory]:
    """Build an `Api` with setting overrides; everything is stopped at teardown.
    In the `scale-out` deployment the app runs on PostgreSQL and Redis, and a
    worker (its own services, in this process) runs the generations."""
    import asyncio

    started: list[Api] = []
    workers: list[tuple[Services, asyncio.Task[None]]] = []
    databases: list[str] = []

    async def build(**overrides: Any) -> Api:
        if deployment == "scale-out":
            databases.append(create_database(request.getfixturevalue("pg_template")))
            overrides = scale_out_settings(pg_url(databases[-1]), **overrides)
        settings = make_settings(tmp_path / f"app{len(started)}", **overrides)
        services = Services.build(settings)
        app = create_app(settings, services=services)
        await services.start()
        if deployment == "scale-out":
            worker = Services.build(settings)
            await worker.start("worker")
            task = asyncio.create_task(
                worker.generation.dispatcher.run_worker(install_signal_handlers=False)  # type: ignore[attr-defined]
            )
            workers.append((worker, task))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=30
        )
        api = Api(client, services)
        started.append(api)
        return api

    yield build
    for worker, task in workers:
        task.cancel()
        # Bounded: a worker cancelled while still starting up may not notice at once.
        await asyncio.wait([task], timeout=10)
        try:
            await asyncio.wait_for(worker.stop(), timeout=20)
        except TimeoutError:  # a stuck shutdown must not fail the test that ran fine
            print("warning: the in-process worker did not stop within 20 s")
    for api in started:
        await api.client.aclose()
        await api.services.stop()
    for name in databases:
        drop_database(name)


@pytest.fixture
async def api(api_factory: ApiFactory) -> Api:
    return await api_factory()


def png_bytes(
    size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    import base64

    return f"data:{mime};base64," + base64.b64encode(data).decode()


def parse_sse(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Split an SSE body into its `data:` events (parsed) and its comment lines."""
    import json

    events: list[dict[str, Any]] = []
    comments: list[str] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
        elif line.startswith(":"):
            comments.append(line)
    return events, comments


async def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0) -> None:
    """Poll an async condition until it holds (bounded); fails the test otherwise."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def states(api: Api, account_id: str) -> list[str]:
    from sqlalchemy import select

    from bananastand.db.models import Generation

    return await api.services.db.read(
        lambda tx: list(
            tx.session.scalars(select(Generation.state).where(Generation.account_id == account_id))
        )
    )


# --- scale-out: PostgreSQL + Redis + a worker ------------------------------------------
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# One template per test session (sessions may run side by side on one machine).
_TEMPLATE = f"bananastand_test_template_{os.getpid()}"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per session; each test copies it (fast)."""
    import asyncio

    from bananastand.db import Database

    _pg_admin(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {_TEMPLATE}")
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:5432/{_TEMPLATE}")

    async def migrate() -> None:
        await db.migrate()
        await db.close()

    # In a thread of its own: this may be first requested from inside a running loop.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, migrate()).result()
    yield _TEMPLATE
    _pg_admin(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")


def create_database(template: str) -> str:
    """A fresh PostgreSQL database copied from the migrated template; its name."""
    import secrets

    name = f"bs_test_{secrets.token_hex(6)}"
    _pg_admin(f"CREATE DATABASE {name} TEMPLATE {template}")
    return name


def drop_database(name: str) -> None:
    _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def pg_url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def pg_database(pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test; its SQLAlchemy URL."""
    name = create_database(pg_template)
    yield pg_url(name)
    drop_database(name)


def scale_out_settings(database_url: str, **overrides: Any) -> dict[str, Any]:
    import secrets

    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": "redis://127.0.0.1:6379/0",
        "redis_prefix": f"bstest-{secrets.token_hex(4)}",
        "worker_heartbeat_seconds": 1.0,
        "worker_stall_seconds": 4.0,
        "janitor_interval_seconds": 0.5,
    }
    values.update(overrides)
    return values


# --- object storage: a real S3 server (moto, standalone) --------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3-compatible server for the whole session; tests take buckets of it."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_settings(s3_server: S3Server) -> dict[str, Any]:
    """Settings that keep a server's files in a fresh bucket of `s3_server`."""
    return s3_server.settings(s3_server.bucket())


# Marks a test module to run once embedded and once scaled out.
BOTH_DEPLOYMENTS = pytest.mark.parametrize("deployment", ["embedded", "scale-out"], indirect=True)


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> str:
    """`embedded` unless a module parametrizes it (indirect) with `scale-out`."""
    return getattr(request, "param", "embedded")
