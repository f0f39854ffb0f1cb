"""The ledger: balance = sum of rows, recharges, the API-access threshold."""

from __future__ import annotations

import pytest

from bananastand.errors import InsufficientCredits, InvalidRequest
from tests.support import BOTH_DEPLOYMENTS, Api

pytestmark = BOTH_DEPLOYMENTS


async def test_credits_endpoint_is_the_ledger_sum(api: Api) -> None:
    key = await api.account(credits=12)
    await api.generate(key, prompt="cat", quantity=2)
    response = await api.client.get("/api/v1/credits", headers=key.headers)
    assert response.json() == {"data": {"credits": 10}}
    assert await api.ledger_sum(key) == 10
    reasons = [e.reason for e in await api.services.billing.ledger(key.account_id)]
    assert reasons == ["generation", "grant"]


async def test_insufficient_credits_is_402_and_charges_nothing(api: Api) -> None:
    key = await api.account(credits=3)
    response = await api.generate(key, prompt="cat", quantity=4)
    assert response.status_code == 402
    assert response.json()["type"] == "insufficient_credits"
    assert await api.balance(key) == 3
    assert (await api.generate(key, prompt="cat", quantity=3)).status_code == 200
    assert await api.balance(key) == 0


async def test_recharge_reaching_the_threshold_enables_api_access(api: Api) -> None:
    key = await api.account(credits=0, api_access=False)
    billing = api.services.billing
    await billing.recharge(key.account_id, money="600", credits=600)
    assert (await api.client.get("/api/v1/credits", headers=key.headers)).status_code == 403
    await billing.recharge(key.account_id, money="50", credits=50, currency="USD")  # other currency
    assert (await api.client.get("/api/v1/credits", headers=key.headers)).status_code == 403
    account = await billing.recharge(key.account_id, money="400.00", credits=400)
    assert account.api_access is True
    response = await api.client.get("/api/v1/credits", headers=key.headers)
    assert response.json() == {"data": {"credits": 1050}}


async def test_threshold_is_configurable(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(api_access_threshold=10, currency="usd")
    key = await api.account(credits=0, api_access=False)
    account = await api.services.billing.recharge(key.account_id, money=10, credits=5)
    assert account.api_access is True


async def test_grant_and_deduct_need_a_reason_and_never_go_negative(api: Api) -> None:
    key = await api.account(credits=5)
    billing = api.services.billing
    with pytest.raises(InvalidRequest):
        await billing.grant(key.account_id, 5, reason=" ")
    with pytest.raises(InsufficientCredits):
        await billing.deduct(key.account_id, 6, reason="chargeback")
    assert await billing.deduct(key.account_id, 5, reason="chargeback") == 0
    assert await billing.grant(key.account_id, 2, reason="apology") == 2
    with pytest.raises(InvalidRequest):
        await billing.recharge(key.account_id, money="-1", credits=1)
    with pytest.raises(InvalidRequest):
        await billing.recharge(key.account_id, money="abc", credits=1)


@pytest.mark.parametrize(
    ("action", "args"),
    [
        ("grant", (10**13,)),
        ("deduct", (10**13,)),
        ("recharge_money", ("nan",)),
        ("recharge_money", ("inf",)),
        ("recharge_money", ("1e40",)),
        ("recharge_money", ("1e9",)),
        ("recharge_money", ("10.123",)),
        ("recharge_money", ("1,000",)),
        ("recharge_credits", (10**23,)),
    ],
)
async def test_absurd_amounts_are_refused_not_stored(api: Api, action: str, args: tuple) -> None:
    key = await api.account(credits=5)
    billing = api.services.billing
    with pytest.raises(InvalidRequest):
        if action == "grant":
            await billing.grant(key.account_id, args[0], reason="big")
        elif action == "deduct":
            await billing.deduct(key.account_id, args[0], reason="big")
        elif action == "recharge_money":
            await billing.recharge(key.account_id, money=args[0], credits=1)
        else:
            await billing.recharge(key.account_id, money="1", credits=args[0])
    assert await api.balance(key) == 5


async def test_balance_cannot_be_pushed_past_the_cap(api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bananastand import billing as billing_module

    monkeypatch.setattr(billing_module, "MAX_BALANCE", 5 * 10**12)
    key = await api.account(credits=0)
    billing = api.services.billing
    for _ in range(5):
        await billing.grant(key.account_id, 10**12, reason="pump")
    with pytest.raises(InvalidRequest):
        await billing.grant(key.account_id, 1, reason="one too many")
    with pytest.raises(InvalidRequest):
        await billing.recharge(key.account_id, money="1", credits=1)
    assert await api.balance(key) == 5 * 10**12
    assert (await api.client.get("/api/v1/credits", headers=key.headers)).status_code == 200
