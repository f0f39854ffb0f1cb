"""Console sign-in: passwords (Argon2), browser sessions and the login rate limit.

A console session is not an API key and an API key is not a session: the API
reads only `Authorization: Bearer nb_…`, the console only its session cookie.
The cookie carries a random token; the database keeps its SHA-256, so a copy of
the database does not sign anyone in. Each session has its own CSRF token.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update

from bananastand.accounts import Accounts
from bananastand.db import Database
from bananastand.db.models import Account, ConsoleSession, LoginAttempt, utcnow
from bananastand.errors import Forbidden, InvalidRequest, TooManyAttempts, Unauthorized

MIN_PASSWORD = 8
MAX_PASSWORD = 256


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SignedIn:
    """A live console session: the account and the session's CSRF token."""

    account: Account
    csrf_token: str
    session_id: str


class ConsoleAuth:
    def __init__(
        self,
        db: Database,
        accounts: Accounts,
        *,
        session_seconds: float,
        max_failures: int,
        window_seconds: float,
        signup_open: bool,
        first_account_admin: bool,
    ) -> None:
        self.db = db
        self.accounts = accounts
        self.session_seconds = session_seconds
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.signup_open = signup_open
        self.first_account_admin = first_account_admin
        self._hasher = PasswordHasher()
        # Verified against when the email is unknown, so both paths cost the same.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    # --- passwords -----------------------------------------------------------------
    async def hash_password(self, password: str, *, email: str = "") -> str:
        if len(password) < MIN_PASSWORD:
            raise InvalidRequest(f"Use a password of at least {MIN_PASSWORD} characters")
        if len(password) > MAX_PASSWORD:
            raise InvalidRequest(f"Use a password of at most {MAX_PASSWORD} characters")
        if email and password.strip().lower() == email.strip().lower():
            raise InvalidRequest("The password cannot be the email address")
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, stored or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return False

    async def set_password(self, account_id: str, password: str) -> None:
        account = await self.accounts.get(account_id)
        hashed = await self.hash_password(password, email=account.email)
        async with self.db.write() as session:
            await session.execute(
                update(Account).where(Account.id == account.id).values(password_hash=hashed)
            )
            # A new password ends every session signed in with the old one.
            await session.execute(
                delete(ConsoleSession).where(ConsoleSession.account_id == account.id)
            )

    # --- sign up / sign in -----------------------------------------------------------
    async def sign_up(self, *, email: str, password: str, display_name: str = "") -> Account:
        if not self.signup_open:
            raise Forbidden("Sign-up is closed on this server; ask its operator for an account")
        hashed = await self.hash_password(password, email=email)
        make_admin = self.first_account_admin and not await self._any_admin()
        account = await self.accounts.create(
            email=email, display_name=display_name.strip()[:200], is_admin=make_admin
        )
        async with self.db.write() as session:
            await session.execute(
                update(Account).where(Account.id == account.id).values(password_hash=hashed)
            )
        return await self.accounts.get(account.id)

    async def _any_admin(self) -> bool:
        async with self.db.read() as session:
            return bool(await session.scalar(select(Account.id).where(Account.is_admin).limit(1)))

    async def sign_in(self, *, email: str, password: str, ip: str) -> tuple[str, SignedIn]:
        """Check the password; answer a new session's cookie token and the session."""
        email = email.strip().lower()
        await self._check_rate(email, ip)
        async with self.db.read() as session:
            account = await session.scalar(select(Account).where(Account.email == email))
        ok = await self._verify(account.password_hash if account else None, password)
        ok = ok and account is not None and account.password_hash is not None
        async with self.db.write() as session:
            session.add(LoginAttempt(email=email[:320], ip=ip[:64], succeeded=ok))
        if not ok or account is None:
            raise Unauthorized("Wrong email or password")
        return await self._open(account)

    async def _check_rate(self, email: str, ip: str) -> None:
        since = utcnow() - timedelta(seconds=self.window_seconds)
        async with self.db.read() as session:
            for column, value, limit in (
                (LoginAttempt.email, email, self.max_failures),
                (LoginAttempt.ip, ip, self.max_failures * 4),
            ):
                failures = await session.scalar(
                    select(func.count(LoginAttempt.id)).where(
                        column == value,
                        LoginAttempt.created_at >= since,
                        LoginAttempt.succeeded.is_(False),
                    )
                )
                if (failures or 0) >= limit:
                    minutes = max(1, round(self.window_seconds / 60))
                    raise TooManyAttempts(
                        "Too many failed sign-in attempts; try again in "
                        f"{minutes} minute{'s' if minutes != 1 else ''}",
                        retry_after=int(self.window_seconds),
                    )

    async def _open(self, account: Account) -> tuple[str, SignedIn]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utcnow()
        async with self.db.write() as session:
            session.add(
                ConsoleSession(
                    id=_digest(token),
                    account_id=account.id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.session_seconds),
                )
            )
            # Housekeeping rides along: forget expired sessions and old attempts.
            await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
            await session.execute(
                delete(LoginAttempt).where(
                    LoginAttempt.created_at < now - timedelta(seconds=self.window_seconds * 4)
                )
            )
        return token, SignedIn(account=account, csrf_token=csrf, session_id=_digest(token))

    # --- sessions ------------------------------------------------------------------
    async def resolve(self, token: str | None) -> SignedIn | None:
        """The live session a cookie token names, or None."""
        if not token or len(token) > 128:
            return None
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(ConsoleSession, Account)
                    .join(Account, Account.id == ConsoleSession.account_id)
                    .where(ConsoleSession.id == _digest(token))
                )
            ).first()
        if row is None or row[0].expires_at <= utcnow():
            return None
        return SignedIn(account=row[1], csrf_token=row[0].csrf_token, session_id=row[0].id)

    async def sign_out(self, session_id: str) -> None:
        async with self.db.write() as session:
            await session.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))
