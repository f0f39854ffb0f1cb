"""What tests share besides fixtures: settings on a temporary folder, the app over
ASGI (`Api`), accounts with keys, small image and SSE helpers, PostgreSQL copies
for the scale-out deployment. The fixtures that use them are in `conftest.py`."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bananastand.config import Settings
from bananastand.container import Services


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
TEMPLATE_DATABASE = f"bananastand_test_template_{os.getpid()}"


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def create_database(template: str) -> str:
    """A fresh PostgreSQL database copied from the migrated template; its name."""
    import secrets

    name = f"bs_test_{secrets.token_hex(6)}"
    pg_admin(f"CREATE DATABASE {name} TEMPLATE {template}")
    return name


def drop_database(name: str) -> None:
    pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def pg_url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


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


# Marks a test module to run once embedded and once scaled out.
BOTH_DEPLOYMENTS = pytest.mark.parametrize("deployment", ["embedded", "scale-out"], indirect=True)
