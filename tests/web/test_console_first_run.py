"""First run: the admin made with the setup code can use the API at once, with a
starting grant in the ledger and the audit log; the dashboard says how to start."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from bananastand.console_auth import STARTING_GRANT_NOTE
from bananastand.errors import InvalidRequest
from tests.support import BOTH_DEPLOYMENTS, Api, Key, make_settings

PASSWORD = "correct horse battery"


async def test_the_first_admin_gets_api_access_and_a_starting_grant_on_the_books(
    api: Api, browser_factory: Any
) -> None:
    admin = await browser_factory.signed_up("admin@example.test", admin=True)
    account = await admin.account(api)
    assert (account.is_admin, account.api_access, account.balance) == (True, True, 100)
    ledger = await api.services.billing.ledger(account.id)
    assert [(e.amount, e.reason, e.note, e.balance_after) for e in ledger] == [
        (100, "grant", STARTING_GRANT_NOTE, 100)
    ]
    audit = await api.services.admin.audit_log()
    assert [(e.actor, e.action, e.account_id, e.details) for e in audit] == [
        ("setup", "first_admin", account.id, {"is_admin": True, "api_access": True, "credits": 100})
    ]
    assert await api.services.billing.reconcile() == []
    # The API takes a key of this account at once.
    created = await api.services.accounts.create_key(account.id, name="first")
    answer = await api.client.get(
        "/api/v1/credits", headers=Key(account.id, created.secret).headers
    )
    assert (answer.status_code, answer.json()) == (200, {"data": {"credits": 100}})


async def test_ordinary_sign_ups_get_neither_access_nor_credits(
    api: Api, browser_factory: Any
) -> None:
    await browser_factory.signed_up("admin@example.test", admin=True)
    user = await browser_factory.signed_up("user@example.test")
    account = await user.account(api)
    assert (account.is_admin, account.api_access, account.balance) == (False, False, 0)
    assert await api.services.billing.ledger(account.id) == []
    assert await api.services.admin.audit_log(account_id=account.id) == []


async def test_a_starting_grant_of_zero_grants_nothing_but_access(api_factory: Any) -> None:
    api: Api = await api_factory(admin_starting_credits=0)
    auth = api.services.console_auth
    account = await auth.sign_up(
        email="admin@example.test", password=PASSWORD, ip="10.0.0.1", setup_code=auth.setup_code
    )
    assert (account.api_access, account.balance) == (True, 0)
    assert await api.services.billing.ledger(account.id) == []
    [entry] = await api.services.admin.audit_log()
    assert entry.details == {"is_admin": True, "api_access": True, "credits": 0}


def test_the_starting_grant_is_bounded(tmp_path: Any) -> None:
    for wrong in (-1, 10**13):
        with pytest.raises(ValidationError):
            make_settings(tmp_path, admin_starting_credits=wrong)
    assert make_settings(tmp_path).admin_starting_credits == 100


@BOTH_DEPLOYMENTS
async def test_racing_sign_ups_with_the_setup_code_make_one_admin_and_one_grant(
    api_factory: Any,
) -> None:
    api: Api = await api_factory()
    auth = api.services.console_auth

    async def sign_up(number: int) -> bool:
        try:
            await auth.sign_up(
                email=f"racer{number}@example.test",
                password=PASSWORD,
                ip=f"10.0.0.{number}",
                setup_code=auth.setup_code or "",
            )
        except InvalidRequest as exc:
            assert "has an admin already" in exc.message
            return False
        return True

    won = await asyncio.gather(*(sign_up(n) for n in range(4)))
    assert sum(won) == 1
    accounts = await api.services.accounts.list()
    assert [a.is_admin for a in accounts if a.is_admin] == [True]
    assert sum(a.balance for a in accounts) == 100
    assert len(await api.services.admin.audit_log()) == 1
    assert await api.services.billing.reconcile() == []


async def test_the_dashboard_shows_how_to_start_until_the_first_generation(
    api: Api, browser_factory: Any
) -> None:
    admin = await browser_factory.signed_up("admin@example.test", admin=True)
    page = await admin.get("/console")
    assert 'data-testid="get-started"' in page.text
    assert "https://images.example.test/api/v1" in page.text
    assert "curl https://images.example.test/api/v1/generate" in page.text
    assert "Authorization: Bearer $BANANASTAND_API_KEY" in page.text
    assert 'href="/console/settings/keys"' in page.text
    assert "nb_" not in page.text  # a placeholder, never a key
    account = await admin.account(api)
    created = await api.services.accounts.create_key(account.id, name="first")
    key = Key(account.id, created.secret)
    answer = await api.generate(key, prompt="a first image")
    assert answer.status_code == 200, answer.text
    assert 'data-testid="get-started"' not in (await admin.get("/console")).text
    # Another account still has it.
    user = await browser_factory.signed_up("user@example.test")
    shown = (await user.get("/console")).text
    assert 'data-testid="get-started"' in shown and "once API access is enabled" in shown
