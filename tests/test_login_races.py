"""The console's attempt limits hold under parallel bursts: each attempt is
checked and recorded in one transaction, one after another (SQLite's writer lock,
an advisory lock on PostgreSQL), so a burst cannot slip past the count."""

from __future__ import annotations

import asyncio

from bananastand.errors import TooManyAttempts, Unauthorized
from tests.support import BOTH_DEPLOYMENTS, Api

pytestmark = BOTH_DEPLOYMENTS

PASSWORD = "correct horse battery"


async def test_parallel_wrong_guesses_are_checked_no_more_than_the_limit(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(console_login_max_failures=3)  # 3 per email, 12 per address
    auth = api.services.console_auth
    await auth.sign_up(email="victim@example.test", password=PASSWORD, ip="10.0.0.1")
    checked = 0
    verify = auth._verify

    async def counting_verify(stored: str | None, password: str) -> bool:
        nonlocal checked
        checked += 1
        return await verify(stored, password)

    auth._verify = counting_verify  # type: ignore[method-assign]

    async def guess(password: str) -> str:
        try:
            await auth.sign_in(email="victim@example.test", password=password, ip="10.9.9.9")
        except Unauthorized:
            return "wrong"
        except TooManyAttempts:
            return "refused"
        return "signed in"

    outcomes = await asyncio.gather(*(guess(f"guess number {n}") for n in range(30)))
    assert checked == 3
    assert outcomes.count("wrong") == 3 and outcomes.count("refused") == 27
    # Even the right password is refused now, until the window passes.
    assert await guess(PASSWORD) == "refused"
    assert checked == 3


async def test_parallel_sign_ups_from_one_address_stop_at_the_limit(api_factory) -> None:  # type: ignore[no-untyped-def]
    api: Api = await api_factory(console_login_max_failures=2)  # 8 sign-ups per address
    auth = api.services.console_auth

    async def sign_up(number: int) -> bool:
        try:
            await auth.sign_up(email=f"bulk{number}@example.test", password=PASSWORD, ip="10.1.1.1")
        except TooManyAttempts:
            return False
        return True

    created = await asyncio.gather(*(sign_up(n) for n in range(20)))
    assert sum(created) == 8
    accounts = [a for a in await api.services.accounts.list() if a.email.startswith("bulk")]
    assert len(accounts) == 8
    # Another address is not held back by this one.
    await auth.sign_up(email="elsewhere@example.test", password=PASSWORD, ip="10.2.2.2")
