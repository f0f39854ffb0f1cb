"""The credit ledger. Every change of credits is one `LedgerEntry` row with a
reason, written by `add_entry` in the same transaction as the change it pays for.
The account's `balance` column is kept beside it in that same transaction (it is
what requests read: no sum over history); `reconcile` proves the two agree.

Reasons: `recharge`, `grant`, `deduct`, `generation` (the charge at
acceptance, negative), `refund` (what was not produced, positive) and `reversal`
(credits a refunded or disputed payment bought, taken back: negative).

Money going back is a `Recharge` row with a negative amount (and the negative
credits it took back), so the recharge total, the threshold's measure, is still
a plain sum; the ledger stays the truth for credits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import aliased

from bananastand.db import Database, Query, Tx
from bananastand.db.models import Account, AuditEntry, Base, LedgerEntry, Recharge, utcnow
from bananastand.errors import InsufficientCredits, InvalidRequest, NotFound

# Bounds that keep every sum far inside a 64-bit integer column.
MAX_CREDITS_PER_CHANGE = 10**12
MAX_BALANCE = 10**15
MAX_MONEY = Decimal("1e12")
# Rows to write in the same transaction as a change, made from the changed account.
Also = Callable[[Account], Sequence[Base]]
_MONEY = re.compile(r"-?\d{1,15}(\.\d{1,2})?")

_BALANCE: Query[int] = Query(select(Account.balance).where(Account.id == bindparam("account_id")))
_CHANGE_BALANCE: Query[int] = Query(
    update(Account)
    .where(Account.id == bindparam("account_id"))
    .values(balance=Account.balance + bindparam("amount"))
    .returning(Account.balance)
)
_ADD_ENTRY: Query[None] = Query(
    insert(LedgerEntry).values(
        account_id=bindparam("account_id"),
        amount=bindparam("amount"),
        balance_after=bindparam("balance_after"),
        reason=bindparam("reason"),
        generation_id=bindparam("generation_id"),
        note=bindparam("note"),
        created_at=bindparam("created_at"),
    )
)


def _check_credits(credits: int) -> None:
    if credits > MAX_CREDITS_PER_CHANGE:
        raise InvalidRequest(f"At most {MAX_CREDITS_PER_CHANGE} credits can change at once")


def balance_in(tx: Tx, account_id: str) -> int:
    balance = tx.scalar(_BALANCE, account_id=account_id)
    if balance is None:
        raise NotFound(f"No account {account_id!r}")
    return int(balance)


def add_entry(
    tx: Tx,
    account_id: str,
    amount: int,
    reason: str,
    *,
    generation_id: str | None = None,
    note: str = "",
) -> int:
    """Change the account's credits by `amount`: its balance and one ledger row, in
    the caller's transaction. Returns the new balance. Callers that check the balance
    first hold the account's lock (`accounts.lock_account`) from check to change."""
    balance = tx.scalar(_CHANGE_BALANCE, account_id=account_id, amount=amount)
    if balance is None:
        raise NotFound(f"No account {account_id!r}")
    tx.run(
        _ADD_ENTRY,
        account_id=account_id,
        amount=amount,
        balance_after=balance,
        reason=reason,
        generation_id=generation_id,
        note=note,
        created_at=utcnow(),
    )
    return int(balance)


@dataclass(frozen=True)
class Mismatch:
    """An account whose kept balance is not the sum of its ledger, or not the
    running balance its newest ledger entry recorded."""

    account_id: str
    email: str
    balance: int
    ledger_sum: int
    last_balance_after: int | None


def _lock(tx: Tx, account_id: str) -> Account:
    account = tx.session.scalar(select(Account).where(Account.id == account_id).with_for_update())
    if account is None:
        raise NotFound(f"No account {account_id!r}")
    return account


class Billing:
    def __init__(self, db: Database, *, threshold: float, currency: str) -> None:
        self.db = db
        self.threshold = Decimal(str(threshold))
        self.currency = currency.upper()

    async def balance(self, account_id: str) -> int:
        return await self.db.read(lambda tx: balance_in(tx, account_id))

    async def ledger(self, account_id: str, *, limit: int = 200) -> list[LedgerEntry]:
        def work(tx: Tx) -> list[LedgerEntry]:
            return list(
                tx.session.scalars(
                    select(LedgerEntry)
                    .where(LedgerEntry.account_id == account_id)
                    .order_by(LedgerEntry.id.desc())
                    .limit(limit)
                )
            )

        return await self.db.read(work)

    async def recharges(self, account_id: str) -> list[Recharge]:
        def work(tx: Tx) -> list[Recharge]:
            return list(
                tx.session.scalars(
                    select(Recharge).where(Recharge.account_id == account_id).order_by(Recharge.id)
                )
            )

        return await self.db.read(work)

    async def recharged_total(self, account_id: str) -> Decimal:
        return await self.db.read(lambda tx: _recharged(tx, account_id, self.currency))

    async def reconcile(self) -> list[Mismatch]:
        """Every account whose kept balance differs from the sum of its ledger or from
        its newest entry's running balance (an empty list when the books agree). One
        pass over the ledger, off the event loop."""

        def work(tx: Tx) -> list[Mismatch]:
            sums = (
                select(
                    LedgerEntry.account_id,
                    func.sum(LedgerEntry.amount).label("total"),
                    func.max(LedgerEntry.id).label("last_id"),
                )
                .group_by(LedgerEntry.account_id)
                .subquery()
            )
            last = aliased(LedgerEntry)
            rows = tx.session.execute(
                select(Account.id, Account.email, Account.balance, sums.c.total, last.balance_after)
                .outerjoin(sums, sums.c.account_id == Account.id)
                .outerjoin(last, last.id == sums.c.last_id)
                .where(
                    (Account.balance != func.coalesce(sums.c.total, 0))
                    | (last.id.is_not(None) & (last.balance_after != Account.balance))
                )
                .order_by(Account.email)
            )
            return [
                Mismatch(id_, email, balance, int(total or 0), after)
                for id_, email, balance, total, after in rows
            ]

        return await self.db.read_heavy(work)

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

        def work(tx: Tx) -> Account:
            account = _lock(tx, account_id)
            self.record_recharge(
                tx, account, money=amount, currency=currency, credits=credits, note=note
            )
            if also is not None:
                tx.session.add_all(also(account))
            tx.session.flush()
            tx.session.refresh(account)
            return account

        return await self.db.write(work)

    def record_recharge(
        self, tx: Tx, account: Account, *, money: Decimal, currency: str, credits: int, note: str
    ) -> Recharge:
        """In the caller's transaction, holding the account's lock: the recharge row,
        its ledger entry, and API access turned on when the total reaches the
        threshold (remembered as automatic)."""
        if balance_in(tx, account.id) + credits > MAX_BALANCE:
            raise InvalidRequest(f"A balance cannot exceed {MAX_BALANCE} credits")
        recharge = Recharge(
            account_id=account.id,
            money_amount=money,
            currency=currency,
            credits=credits,
            note=note,
            created_at=utcnow(),
        )
        tx.session.add(recharge)
        tx.session.flush()
        if credits:
            add_entry(tx, account.id, credits, "recharge", note=f"{money} {currency} {note}")
        if not account.api_access and _recharged(tx, account.id, self.currency) >= self.threshold:
            account.api_access = True
            account.api_access_auto_at = utcnow()
        return recharge

    def record_reversal(
        self, tx: Tx, account: Account, *, money: Decimal, currency: str, credits: int, note: str
    ) -> Reversal:
        """In the caller's transaction, holding the account's lock: money paid in went
        back (a refund, a lost dispute). Takes back up to `credits`, never below a zero
        balance (the rest is the shortfall), lowers the recharge total by `money`, and
        turns API access off when the total falls under the threshold and access was
        on only because it had reached it."""
        # (Read, not `account.balance`: entries earlier in this transaction changed it.)
        taken = max(0, min(credits, balance_in(tx, account.id)))
        tx.session.add(
            Recharge(
                account_id=account.id,
                money_amount=-money,
                currency=currency,
                credits=-taken,
                note=note,
                created_at=utcnow(),
            )
        )
        tx.session.flush()
        if taken:
            add_entry(tx, account.id, -taken, "reversal", note=f"-{money} {currency} {note}")
        disabled = False
        if (
            account.api_access
            and account.api_access_auto_at is not None
            and _recharged(tx, account.id, self.currency) < self.threshold
            and not _access_set_by_admin_since(tx, account.id, account.api_access_auto_at)
        ):
            account.api_access = False
            account.api_access_auto_at = None
            disabled = True
        return Reversal(taken=taken, shortfall=credits - taken, api_access_disabled=disabled)

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

        def work(tx: Tx) -> int:
            account = _lock(tx, account_id)
            balance = account.balance
            if balance + amount < 0:
                raise InsufficientCredits(
                    f"Cannot deduct {-amount} credits: the balance is {balance}"
                )
            if balance + amount > MAX_BALANCE:
                raise InvalidRequest(f"A balance cannot exceed {MAX_BALANCE} credits")
            new_balance = add_entry(tx, account.id, amount, kind, note=reason.strip())
            if also is not None:
                tx.session.add_all(also(account))
            return new_balance

        return await self.db.write(work)


@dataclass(frozen=True)
class Reversal:
    taken: int  # credits taken back
    shortfall: int  # credits that had been spent already
    api_access_disabled: bool


def _access_set_by_admin_since(tx: Tx, account_id: str, since: datetime) -> bool:
    """Whether an admin set the account's API access at or after `since` (its audit
    entries say; an account has few of them)."""
    entries = tx.session.scalars(
        select(AuditEntry.details).where(
            AuditEntry.account_id == account_id,
            AuditEntry.action == "update",
            AuditEntry.created_at >= since,
        )
    )
    return any("api_access" in details for details in entries)


def _recharged(tx: Tx, account_id: str, currency: str) -> Decimal:
    total = tx.session.scalar(
        select(func.coalesce(func.sum(Recharge.money_amount), 0)).where(
            Recharge.account_id == account_id, Recharge.currency == currency
        )
    )
    return Decimal(str(total or 0))
