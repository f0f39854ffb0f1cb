"""An account's usage: ledger pages by keyset, the whole ledger as CSV, and what
generations spent and made per UTC day, per model and per API key."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import update

from bananastand.db.models import Generation
from bananastand.usage import Usage, period_start, safe_cell
from tests.support import BOTH_DEPLOYMENTS, Api, Key


async def generate(api: Api, key: Key, model: str, quantity: int = 1) -> str:
    answer = await api.generate(key, prompt="a pear", selectedModel=model, quantity=quantity)
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True  # sync: it has finished
    generation_id: str = answer.json()["generationId"]
    return generation_id


async def move(api: Api, generation_id: str, created_at: datetime) -> None:
    """Pretend a generation was made at `created_at`."""
    await api.services.db.write(
        lambda tx: tx.session.execute(
            update(Generation).where(Generation.id == generation_id).values(created_at=created_at)
        )
    )


async def test_ledger_pages_newest_first_by_keyset(api: Api) -> None:
    key = await api.account(credits=0)
    for number in range(1, 8):
        await api.services.billing.grant(key.account_id, number, reason=f"grant {number}")
    other = await api.account(credits=99)  # never shows up in the first account's pages
    usage = Usage(api.services.db)

    seen: list[int] = []
    before: int | None = None
    while True:
        page = await usage.ledger_page(key.account_id, before=before, limit=3)
        seen.extend(entry.amount for entry in page.entries)
        assert len(page.entries) <= 3
        if page.older is None:
            break
        assert page.older == page.entries[-1].id
        before = page.older
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    first = await usage.ledger_page(key.account_id, limit=3)
    assert [e.balance_after for e in first.entries] == [28, 21, 15]
    assert first.entries[0].words == "Credits granted" and first.entries[0].note == "grant 7"
    # Exactly a page left: no "Older" link to an empty page.
    last = await usage.ledger_page(key.account_id, before=first.entries[-1].id, limit=4)
    assert [e.amount for e in last.entries] == [4, 3, 2, 1] and last.older is None
    # A cursor past everything, or below the first entry: the newest, or nothing.
    beyond = await usage.ledger_page(key.account_id, before=10**12)
    assert beyond.entries[0].amount == 7
    assert (await usage.ledger_page(key.account_id, before=1)).entries == []
    assert [e.amount for e in (await usage.ledger_page(other.account_id)).entries] == [99]


async def test_generation_entries_name_their_model(api: Api) -> None:
    key = await api.account(credits=10)
    generation_id = await generate(api, key, "nano-banana-sketch")
    page = await Usage(api.services.db).ledger_page(key.account_id)
    charge = page.entries[0]
    assert (charge.reason, charge.words, charge.amount) == ("generation", "Generation charge", -1)
    assert (charge.generation_id, charge.model, charge.balance_after) == (
        generation_id,
        "nano-banana-sketch",
        9,
    )


@BOTH_DEPLOYMENTS
async def test_daily_series_by_model_and_key_over_the_period(api: Api) -> None:
    key = await api.account(credits=100)
    second = await api.services.accounts.create_key(key.account_id, name="second")
    key2 = Key(key.account_id, second.secret)
    stranger = await api.account(credits=100)  # another account's use counts nowhere here

    today = datetime.now(UTC)
    await generate(api, key, "nano-banana", quantity=2)  # 2 credits, 2 images
    b = await generate(api, key2, "nano-banana-sketch")  # 1 credit, 1 image
    c = await generate(api, key, "nano-banana", quantity=3)  # 3 credits, 3 images
    old = await generate(api, key2, "nano-banana", quantity=4)  # 4 credits, 4 images
    await generate(api, stranger, "nano-banana", quantity=4)
    # The first: today; b and c: five days ago (just after midnight UTC); old: 40 days ago.
    five_ago = datetime.combine(today.date() - timedelta(days=5), datetime.min.time(), UTC)
    await move(api, b, five_ago + timedelta(seconds=1))
    await move(api, c, five_ago + timedelta(hours=23, minutes=59))
    await move(api, old, today - timedelta(days=40))
    usage = Usage(api.services.db)

    month = await usage.series(key.account_id, days=30)
    assert len(month.days) == 30 and month.days[-1] == today.date()
    assert month.days[0] == today.date() - timedelta(days=29)
    assert month.since == period_start(30)
    assert month.models == ["nano-banana", "nano-banana-sketch"]  # biggest spender first
    today_tallies = month.day(today.date())
    assert {m: (t.generations, t.images, t.credits) for m, t in today_tallies.items()} == {
        "nano-banana": (1, 2, 2)
    }
    earlier = month.day(five_ago.date())
    assert {m: (t.generations, t.images, t.credits) for m, t in earlier.items()} == {
        "nano-banana": (1, 3, 3),
        "nano-banana-sketch": (1, 1, 1),
    }
    assert set(month.by_day) == {today.date(), five_ago.date()}
    assert (month.total.generations, month.total.images, month.total.credits) == (3, 6, 6)
    assert {m: t.credits for m, t in month.by_model.items()} == {
        "nano-banana": 5,
        "nano-banana-sketch": 1,
    }
    key1_id = (await api.services.accounts.authenticate(f"Bearer {key.secret}")).key_id
    assert {k: t.credits for k, t in month.by_key.items()} == {key1_id: 5, second.key.id: 1}
    assert month.keys == [key1_id, second.key.id]

    quarter = await usage.series(key.account_id, days=90)
    assert len(quarter.days) == 90
    assert (quarter.total.generations, quarter.total.images, quarter.total.credits) == (4, 10, 10)
    assert quarter.by_key[second.key.id].credits == 5
    assert (today - timedelta(days=40)).date() in quarter.by_day


async def test_failed_and_partial_generations_count_what_was_charged_and_made(
    api_factory: object,
) -> None:
    api: Api = await api_factory(builtin_failure_rate=1.0)  # type: ignore[operator]
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="a pear", quantity=2)
    assert answer.status_code in (200, 500, 502), answer.text
    series = await Usage(api.services.db).series(key.account_id, days=30)
    assert (series.total.generations, series.total.images, series.total.credits) == (1, 0, 0)
    assert await api.balance(key) == 10  # charged, then refunded in full


async def test_key_stats_cover_revoked_keys_and_the_playground(api: Api) -> None:
    key = await api.account(credits=100)
    key_id = (await api.services.accounts.authenticate(f"Bearer {key.secret}")).key_id
    await generate(api, key, "nano-banana", quantity=2)
    await generate(api, key, "nano-banana-sketch")
    await api.services.accounts.revoke_key(key_id, account_id=key.account_id)
    usage = Usage(api.services.db)
    stats = await usage.key_stats(key.account_id, since=period_start(90))
    assert key_id is not None
    assert (stats[key_id].generations, stats[key_id].images, stats[key_id].credits) == (2, 3, 3)
    assert await usage.key_stats(key.account_id, since=datetime.now(UTC) + timedelta(1)) == {}


async def test_the_csv_has_every_entry_and_sums_to_the_balance(api: Api) -> None:
    key = await api.account(credits=0)
    billing = api.services.billing
    await billing.recharge(key.account_id, money="25", credits=25, note="=HYPERLINK(1)")
    await billing.grant(key.account_id, 500, reason="+welcome, with a comma")
    await billing.deduct(key.account_id, 30, reason='-a "quoted" chargeback\nsecond line')
    generation_id = await generate(api, key, "nano-banana", quantity=3)
    usage = Usage(api.services.db)

    text = "".join([chunk async for chunk in usage.ledger_csv(key.account_id, chunk=2)])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "id",
        "created_at",
        "reason",
        "amount",
        "balance_after",
        "generation_id",
        "model",
        "note",
    ]
    assert [r["reason"] for r in rows] == ["recharge", "grant", "deduct", "generation"]
    assert sum(int(r["amount"]) for r in rows) == await api.balance(key) == 492
    assert [int(r["balance_after"]) for r in rows] == [25, 525, 495, 492]
    assert [int(r["id"]) for r in rows] == sorted(int(r["id"]) for r in rows)
    assert rows[3]["generation_id"] == generation_id and rows[3]["model"] == "nano-banana"
    assert rows[0]["note"].startswith("25.00 CNY =HYPERLINK")  # not at the start: safe
    assert rows[1]["note"] == "'+welcome, with a comma"
    assert rows[2]["note"] == '\'-a "quoted" chargeback\nsecond line'
    assert rows[3]["amount"] == "-3"  # amounts stay numbers
    stamp = datetime.fromisoformat(rows[0]["created_at"])
    assert rows[0]["created_at"].endswith("Z") and stamp.tzinfo is not None
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)


async def test_the_export_ends_where_it_began(api: Api) -> None:
    """Entries made while an export runs are left for the next export: the file is
    the ledger as it stood when the download started."""
    key = await api.account(credits=0)
    for number in range(5):
        await api.services.billing.grant(key.account_id, 1 + number, reason="before")
    usage = Usage(api.services.db)
    amounts = []
    async for entry in usage.ledger(key.account_id, chunk=2):
        amounts.append(entry.amount)
        if len(amounts) == 1:
            await api.services.billing.grant(key.account_id, 100, reason="during")
    assert amounts == [1, 2, 3, 4, 5]
    assert [e async for e in usage.ledger((await api.account(credits=0)).account_id)] == []


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("plain = text", "plain = text"),
        ("", ""),
    ],
)
def test_free_text_cells_never_start_a_formula(text: str, safe: str) -> None:
    assert safe_cell(text) == safe


def test_a_period_starts_at_midnight_utc() -> None:
    now = datetime(2026, 3, 31, 0, 30, tzinfo=UTC)
    assert period_start(30, now) == datetime(2026, 3, 2, tzinfo=UTC)
    assert period_start(1, now).date() == date(2026, 3, 31)
