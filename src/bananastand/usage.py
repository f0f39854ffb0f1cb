"""An account's usage, read-only: its ledger (a page at a time, or whole as CSV)
and what its generations spent and made per day, per model and per API key.

Nothing here changes credits (that is `billing.add_entry`'s job). Every query is
bounded: ledger pages are keyset pages on `(account_id, id)`; the CSV export
reads the ledger in chunks, one short read transaction each; the daily series
and the per-key figures group in SQL over one time range of
`(account_id, created_at, id)`. Days are UTC days.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, func, select, type_coerce
from sqlalchemy.orm import QueryableAttribute

from bananastand.db import Database, Tx
from bananastand.db.models import Generation, LedgerEntry, StoredImage, utcnow

PERIODS = (30, 90)  # the periods the console offers, in days
PAGE_SIZE = 50
CSV_CHUNK = 1000
CSV_COLUMNS = (
    "id",
    "created_at",
    "reason",
    "amount",
    "balance_after",
    "generation_id",
    "model",
    "note",
)

# Ledger reasons in words (unknown ones are shown as they are).
REASONS = {
    "recharge": "Recharge",
    "grant": "Credits granted",
    "deduct": "Credits deducted",
    "generation": "Generation charge",
    "refund": "Refund",
}
# What a spreadsheet would run as a formula when a cell starts with it.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger row: a change of credits and the balance it left."""

    id: int
    created_at: datetime
    reason: str
    amount: int
    balance_after: int
    generation_id: str | None
    note: str
    model: str | None = None  # the generation's, for its charge and refund

    @property
    def words(self) -> str:
        return REASONS.get(self.reason, self.reason.replace("_", " ").capitalize())


@dataclass(frozen=True, slots=True)
class LedgerPage:
    entries: list[Entry]
    older: int | None  # the cursor (`before=`) of the next, older page; None at the end


@dataclass(slots=True)
class Tally:
    """Generations, images made and credits spent (charged less refunded)."""

    generations: int = 0
    images: int = 0
    credits: int = 0

    def add(self, generations: int, images: int, credits: int) -> None:
        self.generations += generations
        self.images += images
        self.credits += credits


@dataclass
class Series:
    """A period's usage: every UTC day in it (oldest first), each with its tallies
    per model; the same figures per model, per API key (None: the console's
    playground) and in all."""

    days: list[date]
    since: datetime
    by_day: dict[date, dict[str, Tally]] = field(default_factory=dict)
    by_model: dict[str, Tally] = field(default_factory=dict)
    by_key: dict[str | None, Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)

    @property
    def models(self) -> list[str]:
        """The models used in the period, the biggest spender first."""
        return sorted(self.by_model, key=lambda m: (-self.by_model[m].credits, m))

    @property
    def keys(self) -> list[str | None]:
        """The API keys used in the period (None: the playground), biggest first."""
        return sorted(self.by_key, key=lambda k: (-self.by_key[k].credits, k or ""))

    def day(self, day: date) -> dict[str, Tally]:
        return self.by_day.get(day, {})


_ENTRY_COLUMNS = (
    LedgerEntry.id,
    LedgerEntry.created_at,
    LedgerEntry.reason,
    LedgerEntry.amount,
    LedgerEntry.balance_after,
    LedgerEntry.generation_id,
    LedgerEntry.note,
    Generation.model,
)


def _ledger(account_id: str) -> Select[*tuple[Any, ...]]:
    """The account's entries, each with its generation's model (a primary-key join)."""
    return (
        select(*_ENTRY_COLUMNS)
        .outerjoin(Generation, Generation.id == LedgerEntry.generation_id)
        .where(LedgerEntry.account_id == account_id)
    )


def _entries(rows: Iterable[Any]) -> list[Entry]:
    return [Entry(*row) for row in rows]


def _utc_day(tx: Tx) -> ColumnElement[str]:
    """`generations.created_at` as its UTC day, 'YYYY-MM-DD', in SQL."""
    if tx.dialect.name == "postgresql":
        utc = func.timezone("UTC", Generation.created_at)
        return func.to_char(utc, "YYYY-MM-DD", type_=String)
    # SQLite keeps UTC timestamps as 'YYYY-MM-DD HH:MM:SS…' text.
    return func.substr(type_coerce(Generation.created_at, String), 1, 10, type_=String)


def _tallies(
    tx: Tx, account_id: str, since: datetime, *groups: ColumnElement[Any] | QueryableAttribute[Any]
) -> list[tuple[Any, ...]]:
    """(*groups, generations, images, credits) for the account's generations made
    since `since`: one range of the (account_id, created_at) index, grouped in SQL.
    Each generation's images are counted by its own index lookup."""
    images = (
        select(func.count(StoredImage.id))
        .where(StoredImage.generation_id == Generation.id)
        .correlate(Generation)
        .scalar_subquery()
    )
    inner = (
        select(*groups, Generation.credits_used.label("credits"), images.label("images"))
        .where(Generation.account_id == account_id, Generation.created_at >= since)
        .subquery()
    )
    keys = [inner.c[group.name] for group in groups]
    query = select(
        *keys,
        func.count(),
        func.coalesce(func.sum(inner.c.images), 0),
        func.coalesce(func.sum(inner.c.credits), 0),
    ).group_by(*keys)
    return [tuple(row) for row in tx.session.execute(query)]


def period_start(days: int, now: datetime | None = None) -> datetime:
    """Midnight UTC of the first of the last `days` days (today is the last)."""
    today = (now or utcnow()).astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=days - 1), time(), tzinfo=UTC)


def safe_cell(text: str) -> str:
    """A free-text CSV cell a spreadsheet shows as text, never runs as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(entry: Entry) -> list[str | int]:
    return [
        entry.id,
        entry.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        safe_cell(entry.reason),
        entry.amount,
        entry.balance_after,
        entry.generation_id or "",
        safe_cell(entry.model or ""),
        safe_cell(entry.note),
    ]


class Usage:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the ledger ----------------------------------------------------------------------
    async def ledger_page(
        self, account_id: str, *, before: int | None = None, limit: int = PAGE_SIZE
    ) -> LedgerPage:
        """The account's ledger newest first, `limit` entries older than `before`."""

        def work(tx: Tx) -> list[Entry]:
            query = _ledger(account_id)
            if before is not None:
                query = query.where(LedgerEntry.id < before)
            query = query.order_by(LedgerEntry.id.desc()).limit(limit + 1)
            return _entries(tx.session.execute(query))

        entries = await self.db.read(work)
        more = len(entries) > limit
        return LedgerPage(entries[:limit], entries[limit - 1].id if more else None)

    async def ledger(self, account_id: str, *, chunk: int = CSV_CHUNK) -> AsyncIterator[Entry]:
        """Every entry, oldest first, up to the newest when the reading began: read
        `chunk` rows at a time, each in a short transaction of its own (a long
        history never sits whole in memory, nor holds a transaction open)."""

        def newest(tx: Tx) -> int | None:
            return tx.session.scalar(
                select(func.max(LedgerEntry.id)).where(LedgerEntry.account_id == account_id)
            )

        upto = await self.db.read(newest)
        after = 0
        while upto is not None:

            def work(tx: Tx, after: int = after, upto: int = upto) -> list[Entry]:
                query = (
                    _ledger(account_id)
                    .where(LedgerEntry.id > after, LedgerEntry.id <= upto)
                    .order_by(LedgerEntry.id)
                    .limit(chunk)
                )
                return _entries(tx.session.execute(query))

            entries = await self.db.read(work)
            for entry in entries:
                yield entry
            if len(entries) < chunk:
                return
            after = entries[-1].id

    async def ledger_csv(self, account_id: str, *, chunk: int = CSV_CHUNK) -> AsyncIterator[str]:
        """The ledger as CSV text (a header, then one row per entry, oldest first),
        yielded a chunk at a time: amounts are plain integers, times ISO 8601 UTC."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        rows = 0
        async for entry in self.ledger(account_id, chunk=chunk):
            writer.writerow(csv_row(entry))
            rows += 1
            if rows % chunk == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    # --- generations -------------------------------------------------------------------
    async def series(self, account_id: str, *, days: int, now: datetime | None = None) -> Series:
        """The last `days` UTC days (today included): per day and model, per model,
        per API key and in all."""
        since = period_start(days, now)
        result = Series(days=[since.date() + timedelta(days=n) for n in range(days)], since=since)

        def work(tx: Tx) -> list[tuple[Any, ...]]:
            day = _utc_day(tx).label("day")
            return _tallies(tx, account_id, since, day, Generation.model, Generation.api_key_id)

        for day_text, model, key_id, generations, images, credits in await self.db.read(work):
            values = (int(generations), int(images), int(credits))
            day = date.fromisoformat(day_text)
            result.by_day.setdefault(day, {}).setdefault(model, Tally()).add(*values)
            result.by_model.setdefault(model, Tally()).add(*values)
            result.by_key.setdefault(key_id, Tally()).add(*values)
            result.total.add(*values)
        return result

    async def key_stats(self, account_id: str, *, since: datetime) -> dict[str | None, Tally]:
        """Per API key (None: the console's playground), what its generations made
        and spent since `since`. One grouped query."""

        def work(tx: Tx) -> list[tuple[Any, ...]]:
            return _tallies(tx, account_id, since, Generation.api_key_id)

        return {
            key_id: Tally(int(generations), int(images), int(credits))
            for key_id, generations, images, credits in await self.db.read(work)
        }
