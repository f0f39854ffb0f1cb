"""Shared fixtures: settings on a temporary folder, the app over ASGI, accounts
with keys. End-to-end fixtures that start a real server live in `tests/e2e`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bananastand.app import create_app
from bananastand.container import Services
from tests.s3 import S3Server
from tests.support import (
    TEMPLATE_DATABASE,
    Api,
    ApiFactory,
    create_database,
    drop_database,
    make_settings,
    pg_admin,
    pg_url,
    scale_out_settings,
)


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
            assert worker.queue is not None
            task = asyncio.create_task(worker.queue.run_worker(install_signal_handlers=False))
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


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per session; each test copies it (fast)."""
    import asyncio

    from bananastand.db import Database

    pg_admin(f"DROP DATABASE IF EXISTS {TEMPLATE_DATABASE} WITH (FORCE)")
    pg_admin(f"CREATE DATABASE {TEMPLATE_DATABASE}")
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:5432/{TEMPLATE_DATABASE}")

    async def migrate() -> None:
        await db.migrate()
        await db.close()

    # In a thread of its own: this may be first requested from inside a running loop.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, migrate()).result()
    yield TEMPLATE_DATABASE
    pg_admin(f"DROP DATABASE IF EXISTS {TEMPLATE_DATABASE} WITH (FORCE)")


@pytest.fixture
def pg_database(pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test; its SQLAlchemy URL."""
    name = create_database(pg_template)
    yield pg_url(name)
    drop_database(name)


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


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> str:
    """`embedded` unless a module parametrizes it (indirect) with `scale-out`."""
    return getattr(request, "param", "embedded")
