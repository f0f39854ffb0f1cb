"""The credit ledger. Every change of credits is one `LedgerEntry` row with a
reason; an account's balance is the sum of its rows, nothing else.

Reasons: `recharge`, `grant`, `deduct`, `generation` (the charge at
acceptance, negative) and `refund` (what was not produced, positive).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bananastand.accounts import lock_account
from bananastand.db import Database
from bananastand.db.models import Account, Base, LedgerEntry, Recharge, utcnow
from bananastand.errors import InsufficientCredits, InvalidRequest

# Bounds that keep every sum far inside a 64-bit integer column.
MAX_CREDITS_PER_CHANGE = 10**12
MAX_BALANCE = 10**15
MAX_MONEY = Decimal("1e12")
# Rows to write in the same transaction as a change, made from the changed account.
Also = Callable[[Account], Sequence[Base]]
_MONEY = re.compile(r"-?\d{1,15}(\.\d{1,2})?")


def _check_credits(credits: int) -> None:
    if credits > MAX_CREDITS_PER_CHANGE:
        raise InvalidRequest(f"At most {MAX_CREDITS_PER_CHANGE} credits can change at once")


async def balance_in(session: AsyncSession, account_id: str) -> int:
    total = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id
        )
    )
    return int(total or 0)


def add_entry(
    session: AsyncSession,
    account_id: str,
    amount: int,
    reason: str,
    *,
    generation_id: str | None = None,
    note: str = "",
) -> None:
    session.add(
        LedgerEntry(
            account_id=account_id,
            amount=amount,
            reason=reason,
            generation_id=generation_id,
            note=note,
            created_at=utcnow(),
        )
    )


class Billing:
    def __init__(self, db: Database, *, threshold: float, currency: str) -> None:
        self.db = db
        self.threshold = Decimal(str(threshold))
        self.currency = currency.upper()

    async def balance(self, account_id: str) -> int:
        async with self.db.read() as session:
            return await balance_in(session, account_id)

    async def ledger(self, account_id: str, *, limit: int = 200) -> list[LedgerEntry]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.account_id == account_id)
                .order_by(LedgerEntry.id.desc())
                .limit(limit)
            )
            return list(rows)

    async def recharges(self, account_id: str) -> list[Recharge]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Recharge).where(Recharge.account_id == account_id).order_by(Recharge.id)
            )
            return list(rows)

    async def recharged_total(self, account_id: str) -> Decimal:
        async with self.db.read() as session:
            return await _recharged(session, account_id, self.currency)

    async def recharge(
        self,
        account_id: str,
        *,
        money: str | float | Decimal,
        credits: int,
        currency: str | None = None,
        note: str = "",
        also: Also | None = None,
    ) -> Account:
        """Record money paid in and the credits it buys. Recharges in the server's
        currency count toward the API-access threshold; reaching it enables access.
        `also` makes rows to commit with it (an admin action's audit entry)."""
        text = str(money).strip()
        # Plain amounts with at most two decimals: "99", "99.5", "99.50" (no "1e9").
        if not _MONEY.fullmatch(text):
            raise InvalidRequest(
                f"Not a money amount: {text[:40]!r} (use digits, at most two decimals)"
            )
        try:
            amount = Decimal(text).quantize(Decimal("0.01"))
        except InvalidOperation:
            raise InvalidRequest(f"Not a money amount: {text[:40]!r}") from None
        if amount <= 0 or amount > MAX_MONEY:
            raise InvalidRequest(f"A recharge amount must be positive and at most {MAX_MONEY:f}")
        if credits < 0:
            raise InvalidRequest("Credits granted by a recharge cannot be negative")
        _check_credits(credits)
        currency = (currency or self.currency).upper()
        async with self.db.write() as session:
            account = await lock_account(session, account_id)
            session.add(
                Recharge(
                    account_id=account.id,
                    money_amount=amount,
                    currency=currency,
                    credits=credits,
                    note=note,
                    created_at=utcnow(),
                )
            )
            if await balance_in(session, account.id) + credits > MAX_BALANCE:
                raise InvalidRequest(f"A balance cannot exceed {MAX_BALANCE} credits")
            if credits:
                add_entry(
                    session, account.id, credits, "recharge", note=f"{amount} {currency} {note}"
                )
            await session.flush()
            if not account.api_access and (
                await _recharged(session, account.id, self.currency) >= self.threshold
            ):
                account.api_access = True
            if also is not None:
                session.add_all(also(account))
        return account

    async def grant(
        self, account_id: str, credits: int, *, reason: str, also: Also | None = None
    ) -> int:
        if credits <= 0:
            raise InvalidRequest("Credits to grant must be positive")
        return await self._adjust(account_id, credits, "grant", reason, also)

    async def deduct(
        self, account_id: str, credits: int, *, reason: str, also: Also | None = None
    ) -> int:
        if credits <= 0:
            raise InvalidRequest("Credits to deduct must be positive")
        return await self._adjust(account_id, -credits, "deduct", reason, also)

    async def _adjust(
        self, account_id: str, amount: int, kind: str, reason: str, also: Also | None
    ) -> int:
        if not reason.strip():
            raise InvalidRequest("A reason is required")
        _check_credits(abs(amount))
        async with self.db.write() as session:
            account = await lock_account(session, account_id)
            balance = await balance_in(session, account.id)
            if balance + amount < 0:
                raise InsufficientCredits(
                    f"Cannot deduct {-amount} credits: the balance is {balance}"
                )
            if balance + amount > MAX_BALANCE:
                raise InvalidRequest(f"A balance cannot exceed {MAX_BALANCE} credits")
            add_entry(session, account.id, amount, kind, note=reason.strip())
            if also is not None:
                session.add_all(also(account))
            return balance + amount


async def _recharged(session: AsyncSession, account_id: str, currency: str) -> Decimal:
    total = await session.scalar(
        select(func.coalesce(func.sum(Recharge.money_amount), 0)).where(
            Recharge.account_id == account_id, Recharge.currency == currency
        )
    )
    return Decimal(str(total or 0))
