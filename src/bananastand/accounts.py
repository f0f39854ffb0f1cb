"""Accounts and their API keys.

A key is `nb_` + 43 URL-safe characters (256 bits). Only its SHA-256 is stored
(the secret is high-entropy, so a fast hash is the right one-way function);
the full key is returned once, at creation.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from bananastand.db import Database, Query, Tx
from bananastand.db.models import Account, ApiKey, Base, utcnow
from bananastand.errors import (
    ApiAccessDisabled,
    Conflict,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from bananastand.ids import new_id

KEY_PREFIX = "nb_"
_KEY_SHAPE = re.compile(r"^nb_[A-Za-z0-9_-]{20,128}$")
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+$")
TOUCH_EVERY_SECONDS = 60  # `last_used_at` is coarse: one write per key per minute at most


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # the full key: shown once, never stored


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What a request needs to know of its account, read with its key."""

    id: str
    email: str
    api_access: bool
    is_pro: bool
    concurrency_limit: int | None
    balance: int  # when the request was authenticated

    @classmethod
    def of(cls, account: Account) -> AccountInfo:
        return cls(
            account.id,
            account.email,
            account.api_access,
            account.is_pro,
            account.concurrency_limit,
            account.balance,
        )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking for a generation: an account, through one API key (API calls)
    or through a console session (the playground: `key_id` None)."""

    account: AccountInfo
    key_id: str | None


@dataclass(frozen=True, slots=True)
class _KeyRow:
    key_id: str
    secret_hash: str
    revoked_at: datetime | None
    last_used_at: datetime | None
    account_id: str
    email: str
    api_access: bool
    is_pro: bool
    concurrency_limit: int | None
    balance: int


_BY_KEY = Query(
    select(
        ApiKey.id,
        ApiKey.secret_hash,
        ApiKey.revoked_at,
        ApiKey.last_used_at,
        Account.id,
        Account.email,
        Account.api_access,
        Account.is_pro,
        Account.concurrency_limit,
        Account.balance,
    )
    .join(Account, Account.id == ApiKey.account_id)
    .where(ApiKey.secret_hash == bindparam("digest")),
    into=_KeyRow,
)
_TOUCH: Query[None] = Query(
    update(ApiKey).where(ApiKey.id == bindparam("key_id")).values(last_used_at=bindparam("now"))
)


@dataclass(frozen=True, slots=True)
class Locked:
    """An account row locked for the rest of a write transaction."""

    id: str
    balance: int
    concurrency_limit: int | None
    active_generations: int


_LOCK = Query(
    select(Account.id, Account.balance, Account.concurrency_limit, Account.active_generations)
    .where(Account.id == bindparam("account_id"))
    .with_for_update(),
    into=Locked,
)


def lock_account(tx: Tx, account_id: str) -> Locked:
    """Lock the account's row until the transaction ends (PostgreSQL: `FOR UPDATE`;
    SQLite's write transactions hold the whole database already)."""
    account = tx.one(_LOCK, account_id=account_id)
    if account is None:
        raise NotFound(f"No account {account_id!r}")
    return account


MAX_CONCURRENCY_LIMIT = 1_000_000


def checked_limit(limit: int) -> int:
    """A per-account concurrency limit, or a clear error for one out of range."""
    if not 1 <= limit <= MAX_CONCURRENCY_LIMIT:
        raise InvalidRequest(
            f"The concurrency limit must be a whole number from 1 to {MAX_CONCURRENCY_LIMIT}"
        )
    return limit


def checked_email(email: str) -> str:
    """The address as stored (trimmed, lower case), or a clear error."""
    email = email.strip().lower()
    if len(email) > 320 or not _EMAIL_SHAPE.match(email) or "\x00" in email:
        raise InvalidRequest(f"Not an email address: {email[:80]!r}")
    return email


def insert_account(
    tx: Tx,
    *,
    email: str,
    display_name: str = "",
    api_access: bool = False,
    is_pro: bool = False,
    is_admin: bool = False,
    concurrency_limit: int | None = None,
    password_hash: str | None = None,
) -> Account:
    """Add a new account (an email from `checked_email`) in the caller's transaction;
    `Conflict` when the email is taken (an `IntegrityError` at commit when another
    transaction took it meanwhile)."""
    if tx.session.scalar(select(Account.id).where(Account.email == email)):
        raise Conflict(f"An account with email {email} already exists")
    account = Account(
        id=new_id(),
        email=email,
        display_name=display_name,
        api_access=api_access,
        is_pro=is_pro,
        is_admin=is_admin,
        concurrency_limit=concurrency_limit,
        balance=0,
        created_at=utcnow(),
        password_hash=password_hash,
    )
    tx.session.add(account)
    tx.session.flush()
    return account


ACCOUNT_SORTS = ("created", "email", "balance")


@dataclass(frozen=True)
class AccountPage:
    """Accounts in the order asked for, and the cursor of the next page (None: last)."""

    rows: list[Account]
    next_after: str | None


class Accounts:
    def __init__(self, db: Database, *, max_keys: int) -> None:
        self.db = db
        self.max_keys = max_keys

    # --- accounts ------------------------------------------------------------
    async def create(
        self,
        *,
        email: str,
        display_name: str = "",
        api_access: bool = False,
        is_pro: bool = False,
        is_admin: bool = False,
        concurrency_limit: int | None = None,
    ) -> Account:
        email = checked_email(email)
        if concurrency_limit is not None:
            checked_limit(concurrency_limit)

        def work(tx: Tx) -> Account:
            return insert_account(
                tx,
                email=email,
                display_name=display_name,
                api_access=api_access,
                is_pro=is_pro,
                is_admin=is_admin,
                concurrency_limit=concurrency_limit,
            )

        try:
            return await self.db.write(work)
        except IntegrityError:  # another process created it between check and insert
            raise Conflict(f"An account with email {email} already exists") from None

    async def get(self, ref: str) -> Account:
        """Find an account by id or email."""

        def work(tx: Tx) -> Account | None:
            return tx.session.scalar(
                select(Account).where((Account.id == ref) | (Account.email == ref.strip().lower()))
            )

        account = await self.db.read(work)
        if account is None:
            raise NotFound(f"No account {ref!r}")
        return account

    async def list(self, *, search: str = "", limit: int = 100) -> list[Account]:
        def work(tx: Tx) -> list[Account]:
            query = select(Account).order_by(Account.created_at).limit(limit)
            if search:
                query = query.where(Account.email.contains(search.lower()))
            return list(tx.session.scalars(query))

        return await self.db.read(work)

    async def page(
        self, *, search: str = "", sort: str = "created", after: str = "", limit: int = 50
    ) -> AccountPage:
        """One page of accounts by keyset (no OFFSET): `sort` is `created` (newest
        first), `email` (A to Z) or `balance` (largest first), ties broken by id;
        `after` is the id of the previous page's last account."""
        if sort not in ACCOUNT_SORTS:
            raise InvalidRequest(f"Sort by one of: {', '.join(ACCOUNT_SORTS)}")

        def work(tx: Tx) -> AccountPage:
            query = select(Account)
            if search:
                query = query.where(Account.email.contains(search.strip().lower(), autoescape=True))
            last = tx.session.get(Account, after) if after else None
            if sort == "email":
                query = query.order_by(Account.email)
                if last is not None:
                    query = query.where(Account.email > last.email)
            else:
                column = Account.created_at if sort == "created" else Account.balance
                query = query.order_by(column.desc(), Account.id.desc())
                if last is not None:
                    mark = last.created_at if sort == "created" else last.balance
                    query = query.where(
                        (column < mark) | ((column == mark) & (Account.id < last.id))
                    )
            rows = list(tx.session.scalars(query.limit(limit + 1)))
            more = len(rows) > limit
            return AccountPage(rows[:limit], rows[limit - 1].id if more else None)

        return await self.db.read(work)

    async def count(self) -> int:
        return await self.db.read(
            lambda tx: int(tx.session.scalar(select(func.count(Account.id))) or 0)
        )

    async def update(
        self,
        ref: str,
        *,
        api_access: bool | None = None,
        is_pro: bool | None = None,
        is_admin: bool | None = None,
        concurrency_limit: int | None = None,
        reset_concurrency_limit: bool = False,
        also: Callable[[Account], Sequence[Base]] | None = None,
    ) -> Account:
        """Change flags and limits; `also` makes rows to commit with the change."""
        account = await self.get(ref)
        values: dict[str, object] = {}
        if api_access is not None:
            values["api_access"] = api_access
        if is_pro is not None:
            values["is_pro"] = is_pro
        if is_admin is not None:
            values["is_admin"] = is_admin
        if concurrency_limit is not None:
            values["concurrency_limit"] = checked_limit(concurrency_limit)
        if reset_concurrency_limit:
            values["concurrency_limit"] = None
        if values:

            def work(tx: Tx) -> None:
                tx.session.execute(update(Account).where(Account.id == account.id).values(**values))
                if also is not None:
                    tx.session.add_all(also(account))

            await self.db.write(work)
        return await self.get(account.id)

    # --- keys ------------------------------------------------------------------
    async def create_key(self, account_id: str, *, name: str = "") -> CreatedKey:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)

        def work(tx: Tx) -> ApiKey:
            account = lock_account(tx, account_id)
            live = tx.session.scalar(
                select(func.count(ApiKey.id)).where(
                    ApiKey.account_id == account.id, ApiKey.revoked_at.is_(None)
                )
            )
            if (live or 0) >= self.max_keys:
                raise Conflict(
                    f"An account can hold at most {self.max_keys} API keys; "
                    "revoke one before creating another"
                )
            key = ApiKey(
                id=new_id(),
                account_id=account.id,
                name=name.strip()[:200],
                prefix=secret[:10],
                secret_hash=hash_key(secret),
                created_at=utcnow(),
            )
            tx.session.add(key)
            return key

        return CreatedKey(key=await self.db.write(work), secret=secret)

    # `builtins.list`: inside this class, after `def list`, a bare `list` is that method.
    async def list_keys(
        self, account_id: str, *, include_revoked: bool = False
    ) -> builtins.list[ApiKey]:
        def work(tx: Tx) -> list[ApiKey]:
            query = select(ApiKey).where(ApiKey.account_id == account_id)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return list(tx.session.scalars(query.order_by(ApiKey.created_at)))

        return await self.db.read(work)

    async def revoke_key(self, key_id: str, *, account_id: str | None = None) -> ApiKey:
        """Revoke a key (by id or prefix). With `account_id`, only that account's keys."""

        def work(tx: Tx) -> ApiKey:
            query = select(ApiKey).where((ApiKey.id == key_id) | (ApiKey.prefix == key_id))
            if account_id is not None:
                query = query.where(ApiKey.account_id == account_id)
            key = tx.session.scalar(query)
            if key is None:
                raise NotFound(f"No API key {key_id!r}")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            return key

        return await self.db.write(work)

    async def authenticate(self, authorization: str | None) -> Caller:
        """Check an `Authorization: Bearer nb_…` header; 401 or 403 otherwise. One
        indexed read: the key, its account and the account's balance."""
        if not authorization:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer nb_…'")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not _KEY_SHAPE.match(secret):
            raise Unauthorized("Malformed API key: send 'Authorization: Bearer nb_…'")
        digest = hash_key(secret)
        rows = await self.db.fetch(_BY_KEY, digest=digest)
        row = rows[0] if rows else None
        # The lookup is by hash; the compare below keeps the final check constant-time.
        if row is None or not hmac.compare_digest(row.secret_hash, digest):
            raise Unauthorized("Invalid API key")
        if row.revoked_at is not None:
            raise Unauthorized("This API key has been revoked")
        if not row.api_access:
            raise ApiAccessDisabled()
        now = utcnow()
        if (
            row.last_used_at is None
            or (now - row.last_used_at).total_seconds() >= TOUCH_EVERY_SECONDS
        ):
            await self.db.write(lambda tx: tx.run(_TOUCH, key_id=row.key_id, now=now))
        account = AccountInfo(
            row.account_id,
            row.email,
            row.api_access,
            row.is_pro,
            row.concurrency_limit,
            row.balance,
        )
        return Caller(account=account, key_id=row.key_id)
