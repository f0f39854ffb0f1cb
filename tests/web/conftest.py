"""A signed-in browser without a browser: an httpx client over ASGI that keeps
cookies, reads CSRF tokens from pages and posts forms like the pages do."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bananastand.db.models import Account
from tests.support import Api

PASSWORD = "correct horse battery"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    match = _TOKEN.search(page.text)
    assert match, f"no CSRF token on {page.url}"
    return match.group(1)


@dataclass
class Browser:
    client: httpx.AsyncClient
    email: str = ""

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, **kwargs)

    async def submit(self, page: str, action: str, **fields: Any) -> httpx.Response:
        """Load `page`, then post its form to `action` with the page's CSRF token."""
        token = csrf_of(await self.client.get(page))
        return await self.client.post(action, data={"csrf_token": token, **fields})

    async def account(self, api: Api) -> Account:
        return await api.services.accounts.get(self.email)


@pytest.fixture
def browser_factory(api: Api) -> Any:
    clients: list[httpx.AsyncClient] = []

    def new() -> Browser:
        transport = api.client._transport  # the same app, its own cookie jar
        # Over https, as the public address (https://images.example.test) says.
        client = httpx.AsyncClient(transport=transport, base_url="https://testserver")
        clients.append(client)
        return Browser(client)

    async def signed_up(
        email: str | None = None, password: str = PASSWORD, *, admin: bool = False
    ) -> Browser:
        """A new account, signed in; with `admin`, signed up with the admin setup code."""
        browser = new()
        browser.email = email or f"user-{secrets.token_hex(4)}@example.test"
        code = api.services.console_auth.setup_code if admin else ""
        answer = await browser.submit(
            "/console/signup",
            "/console/signup",
            email=browser.email,
            password=password,
            confirm=password,
            setup_code=code or "",
        )
        assert answer.status_code == 303, answer.text
        return browser

    new.signed_up = signed_up  # type: ignore[attr-defined]
    return new
