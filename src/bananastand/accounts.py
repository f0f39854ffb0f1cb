"""Accounts and their API keys.

A key is `nb_` + 43 URL-safe characters (256 bits). Only its SHA-256 is stored
(the secret is high-entropy, so a fast hash is the right one-way function);
the full key is returned once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bananastand.db import Database
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


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # the full key: shown once, never stored


@dataclass(frozen=True)
class Caller:
    """Who is asking for a generation: an account, through one API key (API calls)
    or through a console session (the playground: `key_id` None)."""

    account: Account
    key_id: str | None


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
        email = email.strip().lower()
        if len(email) > 320 or not _EMAIL_SHAPE.match(email) or "\x00" in email:
            raise InvalidRequest(f"Not an email address: {email[:80]!r}")
        try:
            return await self._insert(
                email=email,
                display_name=display_name,
                api_access=api_access,
                is_pro=is_pro,
                is_admin=is_admin,
                concurrency_limit=concurrency_limit,
            )
        except IntegrityError:  # another process created it between check and insert
            raise Conflict(f"An account with email {email} already exists") from None

    async def _insert(self, *, email: str, **fields: Any) -> Account:
        async with self.db.write() as session:
            if await session.scalar(select(Account.id).where(Account.email == email)):
                raise Conflict(f"An account with email {email} already exists")
            account = Account(id=new_id(), email=email, created_at=utcnow(), **fields)
            session.add(account)
        return account

    async def get(self, ref: str) -> Account:
        """Find an account by id or email."""
        async with self.db.read() as session:
            account = await session.scalar(
                select(Account).where((Account.id == ref) | (Account.email == ref.strip().lower()))
            )
        if account is None:
            raise NotFound(f"No account {ref!r}")
        return account

    async def list(self, *, search: str = "", limit: int = 100) -> list[Account]:
        async with self.db.read() as session:
            query = select(Account).order_by(Account.created_at).limit(limit)
            if search:
                query = query.where(Account.email.contains(search.lower()))
            return list(await session.scalars(query))

    async def count(self) -> int:
        async with self.db.read() as session:
            return int(await session.scalar(select(func.count(Account.id))) or 0)

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
            if concurrency_limit < 1:
                raise InvalidRequest("The concurrency limit must be at least 1")
            values["concurrency_limit"] = concurrency_limit
        if reset_concurrency_limit:
            values["concurrency_limit"] = None
        if values:
            async with self.db.write() as session:
                await session.execute(
                    update(Account).where(Account.id == account.id).values(**values)
                )
                if also is not None:
                    session.add_all(also(account))
        return await self.get(account.id)

    # --- keys ------------------------------------------------------------------
    async def create_key(self, account_id: str, *, name: str = "") -> CreatedKey:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.db.write() as session:
            account = await lock_account(session, account_id)
            live = await session.scalar(
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
            session.add(key)
        return CreatedKey(key=key, secret=secret)

    async def list_keys(self, account_id: str, *, include_revoked: bool = False) -> list[ApiKey]:
        async with self.db.read() as session:
            query = select(ApiKey).where(ApiKey.account_id == account_id)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return list(await session.scalars(query.order_by(ApiKey.created_at)))

    async def revoke_key(self, key_id: str, *, account_id: str | None = None) -> ApiKey:
        """Revoke a key (by id or prefix). With `account_id`, only that account's keys."""
        async with self.db.write() as session:
            query = select(ApiKey).where((ApiKey.id == key_id) | (ApiKey.prefix == key_id))
            if account_id is not None:
                query = query.where(ApiKey.account_id == account_id)
            key = await session.scalar(query)
            if key is None:
                raise NotFound(f"No API key {key_id!r}")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
        return key

    async def authenticate(self, authorization: str | None) -> Caller:
        """Check an `Authorization: Bearer nb_…` header; 401 or 403 otherwise."""
        if not authorization:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer nb_…'")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not _KEY_SHAPE.match(secret):
            raise Unauthorized("Malformed API key: send 'Authorization: Bearer nb_…'")
        digest = hash_key(secret)
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(ApiKey, Account)
                    .join(Account, Account.id == ApiKey.account_id)
                    .where(ApiKey.secret_hash == digest)
                )
            ).first()
        # The lookup is by hash; the compare below keeps the final check constant-time.
        if row is None or not hmac.compare_digest(row[0].secret_hash, digest):
            raise Unauthorized("Invalid API key")
        key, account = row
        if key.revoked_at is not None:
            raise Unauthorized("This API key has been revoked")
        if not account.api_access:
            raise ApiAccessDisabled()
        await self._touch(key.id, key.last_used_at)
        return Caller(account=account, key_id=key.id)

    async def _touch(self, key_id: str, last_used: datetime | None) -> None:
        now = utcnow()
        # Coarse on purpose: one write per key per minute at most.
        if last_used is not None and (now - last_used).total_seconds() < 60:
            return
        async with self.db.write() as session:
            await session.execute(
                update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now)
            )


async def lock_account(session: AsyncSession, account_id: str) -> Account:
    account = await session.scalar(
        select(Account).where(Account.id == account_id).with_for_update()
    )
    if account is None:
        raise NotFound(f"No account {account_id!r}")
    return account
