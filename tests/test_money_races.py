"""Money stays exact under concurrency, whatever is kept beside the ledger for speed:
the balance column always equals the ledger's sum, parallel admissions never
overdraw it, refunds and cancels never double, and a revoked key is refused on the
very next request."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from bananastand.db.models import Account, LedgerEntry
from tests.support import BOTH_DEPLOYMENTS, Api, states

pytestmark = BOTH_DEPLOYMENTS


async def ledger_of(api: Api, account_id: str) -> list[tuple[int, int, str, str | None]]:
    """(amount, balance_after, reason, generation_id) of each entry, oldest first."""
    return await api.services.db.read(
        lambda tx: [
            tuple(row)
            for row in tx.session.execute(
                select(
                    LedgerEntry.amount,
                    LedgerEntry.balance_after,
                    LedgerEntry.reason,
                    LedgerEntry.generation_id,
                )
                .where(LedgerEntry.account_id == account_id)
                .order_by(LedgerEntry.id)
            )
        ]
    )


async def assert_books_agree(api: Api, account_id: str) -> int:
    """The kept balance is the ledger's sum, and each entry's running balance adds up."""
    entries = await ledger_of(api, account_id)
    running = 0
    for amount, balance_after, _reason, _generation in entries:
        running += amount
        assert balance_after == running, entries
    assert await api.services.billing.balance(account_id) == running
    assert await api.services.billing.reconcile() == []
    assert await slots_kept(api, account_id) == await slots_counted(api, account_id)
    return running


async def slots_kept(api: Api, account_id: str) -> int:
    return int(
        await api.services.db.read(
            lambda tx: tx.session.scalar(
                select(Account.active_generations).where(Account.id == account_id)
            )
        )
    )


async def slots_counted(api: Api, account_id: str) -> int:
    return len([s for s in await states(api, account_id) if s in ("queued", "running")])


async def test_parallel_admissions_never_exceed_the_concurrency_limit(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=0.5, async_queue_size=1000)
    key = await api.account(credits=100, concurrency_limit=3)
    answers = await asyncio.gather(
        *[api.generate(key, prompt=f"slot race {i}", mode="async") for i in range(20)]
    )
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 3, codes
    assert set(codes) == {200, 429}, codes
    assert await slots_kept(api, key.account_id) == 3 == await slots_counted(api, key.account_id)
    for answer in answers:
        if answer.status_code == 200:
            await api.wait_settled(key, answer.json()["generationId"])
    assert await slots_kept(api, key.account_id) == 0
    assert await assert_books_agree(api, key.account_id) == 97


async def test_parallel_admissions_never_overdraw_the_balance(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=0.3, async_queue_size=1000)
    key = await api.account(credits=7, concurrency_limit=100)
    answers = await asyncio.gather(
        *[api.generate(key, prompt=f"race {i}", mode="async") for i in range(40)]
    )
    codes = [a.status_code for a in answers]
    assert codes.count(200) == 7, codes
    assert set(codes) == {200, 402}, codes
    accepted = [a.json() for a in answers if a.status_code == 200]
    # Each acceptance saw the balance its own charge left: 6, 5, …, 0, each once.
    assert sorted(a["remainingCredits"] for a in accepted) == list(range(7))
    for answer in accepted:
        await api.wait_settled(key, answer["generationId"])
    assert await assert_books_agree(api, key.account_id) == 0


async def test_cancels_and_settlements_racing_refund_exactly_once(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(builtin_latency_seconds=5, async_queue_size=1000)
    key = await api.account(credits=20, concurrency_limit=10)
    ids = []
    for i in range(4):
        answer = await api.generate(key, prompt=f"cancel me {i}", mode="async", quantity=2)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["generationId"])
    assert await api.balance(key) == 12
    service = api.services.generation
    cancels = [service.cancel(i, account_id=key.account_id) for i in ids for _ in range(3)]
    failures = [service.fail(i, "the worker went away") for i in ids]
    results = await asyncio.gather(*cancels, *failures)
    changed = [changed for _record, changed in results[: len(cancels)]]
    # Of the three cancels and one failure of each generation, one settled it.
    assert changed.count(True) <= len(ids)
    for generation_id in ids:
        await api.services.generation.dispatcher.wait(generation_id)
    entries = await ledger_of(api, key.account_id)
    refunds = [e for e in entries if e[2] == "refund"]
    assert sorted(e[3] for e in refunds) == sorted(ids)  # one refund per generation
    assert all(e[0] == 2 for e in refunds)
    assert await assert_books_agree(api, key.account_id) == 20


async def test_a_revoked_key_is_refused_on_the_very_next_request(api: Api) -> None:
    key = await api.account(credits=5)
    ok = await api.client.get("/api/v1/credits", headers=key.headers)
    assert ok.json() == {"data": {"credits": 5}}
    keys = await api.services.accounts.list_keys(key.account_id)
    await api.services.accounts.revoke_key(keys[0].id)
    refused = await api.client.get("/api/v1/credits", headers=key.headers)
    assert refused.status_code == 401
    assert refused.json()["type"] == "unauthorized"


async def test_a_balance_change_shows_on_the_very_next_request(api: Api) -> None:
    key = await api.account(credits=5)
    assert (await api.client.get("/api/v1/credits", headers=key.headers)).json()["data"] == {
        "credits": 5
    }
    await api.services.billing.grant(key.account_id, 3, reason="goodwill")
    credits = await api.client.get("/api/v1/credits", headers=key.headers)
    assert credits.json() == {"data": {"credits": 8}}
    await api.services.billing.deduct(key.account_id, 8, reason="correction")
    assert (await api.generate(key, prompt="nothing left")).status_code == 402
