"""Console sign-in: passwords (Argon2), browser sessions and the login rate limit.

A console session is not an API key and an API key is not a session: the API
reads only `Authorization: Bearer nb_…`, the console only its session cookie.
The cookie carries a random token; the database keeps its SHA-256, so a copy of
the database does not sign anyone in. Each session has its own CSRF token.

The first admin: while no account is an admin, signing up with the *admin setup
code* (derived from the server's secret and printed on its console at start,
never logged) makes one. Whoever can read the server's console is the operator,
so that account can use the API at once: API access on, and a starting grant
(`admin_starting_credits`) in the ledger, with its audit entry, in the same
transaction that makes the account.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError

from bananastand.accounts import Accounts, checked_email, insert_account
from bananastand.admin import audit_entry
from bananastand.billing import add_entry
from bananastand.db import Database, Tx
from bananastand.db.models import Account, ConsoleSession, LoginAttempt, utcnow
from bananastand.errors import Conflict, Forbidden, InvalidRequest, TooManyAttempts, Unauthorized

MIN_PASSWORD = 8
SIGNUP = "(sign-up)"  # the `email` of the attempts that count sign-ups
MAX_PASSWORD = 256
_ATTEMPTS_LOCK = 0x62616E62  # PostgreSQL advisory lock: sign-in attempts, one at a time
_ADMIN_LOCK = 0x62616E61  # PostgreSQL advisory lock: sign-ups with the admin setup code
_HAS_ADMIN = "This server has an admin already: leave the code empty"
STARTING_GRANT_NOTE = "starting credits of the first admin (setup code)"


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
        setup_code: str | None,
        starting_credits: int = 0,
    ) -> None:
        self.db = db
        self.accounts = accounts
        self.session_seconds = session_seconds
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.signup_open = signup_open
        self.setup_code = setup_code
        self.starting_credits = starting_credits  # granted to the first admin
        self._hasher = PasswordHasher()
        # Each Argon2 run takes 64 MiB and a core for a while: a few at a time.
        self._hashing = asyncio.Semaphore(2)
        # Verified against when the email is unknown, so both paths cost the same;
        # made on first use (an Argon2 hash: not for processes that never sign in).
        self._decoy: str | None = None

    # --- passwords -----------------------------------------------------------------
    async def hash_password(self, password: str, *, email: str = "") -> str:
        if len(password) < MIN_PASSWORD:
            raise InvalidRequest(f"Use a password of at least {MIN_PASSWORD} characters")
        if len(password) > MAX_PASSWORD:
            raise InvalidRequest(f"Use a password of at most {MAX_PASSWORD} characters")
        if email and password.strip().lower() == email.strip().lower():
            raise InvalidRequest("The password cannot be the email address")
        async with self._hashing:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, stored: str | None, password: str) -> bool:
        try:
            async with self._hashing:
                hashed = stored or self._decoy
                if hashed is None:  # no such account: verify against a decoy all the same
                    hashed = self._decoy = await asyncio.to_thread(
                        self._hasher.hash, secrets.token_urlsafe(16)
                    )
                return await asyncio.to_thread(self._hasher.verify, hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    async def set_password(self, account_id: str, password: str) -> None:
        account = await self.accounts.get(account_id)
        hashed = await self.hash_password(password, email=account.email)

        def work(tx: Tx) -> None:
            tx.session.execute(
                update(Account).where(Account.id == account.id).values(password_hash=hashed)
            )
            # A new password ends every session signed in with the old one.
            tx.session.execute(
                delete(ConsoleSession).where(ConsoleSession.account_id == account.id)
            )

        await self.db.write(work)

    async def change_password(
        self, signed: SignedIn, *, current: str, new: str, ip: str
    ) -> tuple[str, SignedIn]:
        """Check the current password (counted like a sign-in), set the new one, end
        every other session and answer a fresh one for this browser."""
        attempt = await self._count_attempt(signed.account.email, ip)
        stored = await self.db.read(
            lambda tx: tx.session.scalar(
                select(Account.password_hash).where(Account.id == signed.account.id)
            )
        )
        if not await self._verify(stored, current) or stored is None:
            raise Unauthorized("The current password is not right")
        await self.db.write(
            lambda tx: tx.session.execute(
                update(LoginAttempt).where(LoginAttempt.id == attempt).values(succeeded=True)
            )
        )
        await self.set_password(signed.account.id, new)
        return await self.open_session(await self.accounts.get(signed.account.id))

    # --- sign up / sign in -----------------------------------------------------------
    async def needs_admin(self) -> bool:
        """True while the admin setup code can still make the first admin."""
        return self.setup_code is not None and not await self._any_admin()

    async def sign_up(
        self,
        *,
        email: str,
        password: str,
        ip: str,
        display_name: str = "",
        setup_code: str = "",
    ) -> Account:
        if not self.signup_open:
            raise Forbidden("Sign-up is closed on this server; ask its operator for an account")
        # Sign-ups count against the address's attempts (each costs two Argon2 runs).
        await self._count_attempt(SIGNUP, ip)
        make_admin = False
        if setup_code.strip():
            if self.setup_code is None or not hmac.compare_digest(
                setup_code.strip().upper().encode(), self.setup_code.encode()
            ):
                raise InvalidRequest("That admin setup code is not right")
            if await self._any_admin():  # (checked again, serialised, below)
                raise InvalidRequest(_HAS_ADMIN)
            make_admin = True
        email = checked_email(email)
        hashed = await self.hash_password(password, email=email)
        credits = self.starting_credits if make_admin else 0

        def work(tx: Tx) -> Account:
            if make_admin:
                # One admin, even when two sign-ups race with the code: the check and
                # the insert hold a lock every such sign-up takes (SQLite's writers
                # go one at a time already).
                if tx.dialect.name == "postgresql":
                    tx.session.execute(text(f"SELECT pg_advisory_xact_lock({_ADMIN_LOCK})"))
                if tx.session.scalar(select(Account.id).where(Account.is_admin).limit(1)):
                    raise InvalidRequest(_HAS_ADMIN)
            account = insert_account(
                tx,
                email=email,
                display_name=display_name.strip()[:200],
                is_admin=make_admin,
                api_access=make_admin,  # the operator can use the API at once
                password_hash=hashed,
            )
            if make_admin:
                if credits:
                    add_entry(tx, account.id, credits, "grant", note=STARTING_GRANT_NOTE)
                tx.session.add(
                    audit_entry(
                        "setup",
                        "first_admin",
                        account.id,
                        {"is_admin": True, "api_access": True, "credits": credits},
                    )
                )
            return account

        try:
            account = await self.db.write(work)
        except IntegrityError:  # another sign-up took the email between check and insert
            raise Conflict(f"An account with email {email} already exists") from None
        return await self.accounts.get(account.id)

    async def _any_admin(self) -> bool:
        return bool(
            await self.db.read(
                lambda tx: tx.session.scalar(select(Account.id).where(Account.is_admin).limit(1))
            )
        )

    async def sign_in(self, *, email: str, password: str, ip: str) -> tuple[str, SignedIn]:
        """Check the password; answer a new session's cookie token and the session."""
        email = email.strip().lower()
        # Counted as a failure before the (slow) check, so a burst of parallel
        # guesses cannot all slip under the limit; a success clears it.
        attempt = await self._count_attempt(email, ip)
        account = await self.db.read(
            lambda tx: tx.session.scalar(select(Account).where(Account.email == email))
        )
        ok = await self._verify(account.password_hash if account else None, password)
        if not ok or account is None or account.password_hash is None:
            raise Unauthorized("Wrong email or password")

        def signed_in(tx: Tx) -> None:
            # Signed in: this attempt succeeded, and the email's earlier failures end.
            tx.session.execute(
                update(LoginAttempt).where(LoginAttempt.id == attempt).values(succeeded=True)
            )
            tx.session.execute(
                delete(LoginAttempt).where(
                    LoginAttempt.email == email, LoginAttempt.succeeded.is_(False)
                )
            )

        await self.db.write(signed_in)
        return await self.open_session(account)

    async def _count_attempt(self, email: str, ip: str) -> int:
        """Check the limits and record this attempt (as failed until it succeeds) in
        one transaction, serialised with every other attempt's, so a parallel burst
        is counted one by one. Raises `TooManyAttempts` (recording nothing) when
        over: failed sign-ins per email and per address; sign-ups (any outcome) per
        address, counted apart so a busy office never locks its admin out."""
        now = utcnow()
        since = now - timedelta(seconds=self.window_seconds)
        signup = email == SIGNUP
        recent = LoginAttempt.created_at >= since
        if signup:
            checks = [
                ((LoginAttempt.ip == ip) & (LoginAttempt.email == SIGNUP), self.max_failures * 4)
            ]
        else:
            failed = recent & LoginAttempt.succeeded.is_(False)
            checks = [
                (failed & (LoginAttempt.email == email), self.max_failures),
                (
                    failed & (LoginAttempt.ip == ip) & (LoginAttempt.email != SIGNUP),
                    self.max_failures * 4,
                ),
            ]

        def work(tx: Tx) -> int | None:
            if tx.dialect.name == "postgresql":
                # SQLite's writers already go one at a time (BEGIN IMMEDIATE).
                tx.session.execute(text(f"SELECT pg_advisory_xact_lock({_ATTEMPTS_LOCK})"))
            for where, limit in checks:
                count = tx.session.scalar(select(func.count(LoginAttempt.id)).where(where, recent))
                if int(count or 0) >= limit:
                    return None
            attempt = LoginAttempt(email=email[:320], ip=ip[:64], succeeded=False, created_at=now)
            tx.session.add(attempt)
            # Forget attempts long past every window.
            tx.session.execute(
                delete(LoginAttempt).where(
                    LoginAttempt.created_at < now - timedelta(seconds=self.window_seconds * 4)
                )
            )
            tx.session.flush()
            return attempt.id

        attempt = await self.db.write(work)
        if attempt is None:
            minutes = max(1, round(self.window_seconds / 60))
            what = "sign-ups from this address" if signup else "sign-in attempts"
            raise TooManyAttempts(
                f"Too many {what}; try again in {minutes} minute{'s' if minutes != 1 else ''}",
                retry_after=int(self.window_seconds),
            )
        return attempt

    async def open_session(self, account: Account) -> tuple[str, SignedIn]:
        """A new signed-in session: the cookie's token, and the session."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utcnow()

        def work(tx: Tx) -> None:
            tx.session.add(
                ConsoleSession(
                    id=_digest(token),
                    account_id=account.id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.session_seconds),
                )
            )
            # Housekeeping rides along: forget expired sessions.
            tx.session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))

        await self.db.write(work)
        return token, SignedIn(account=account, csrf_token=csrf, session_id=_digest(token))

    # --- sessions ------------------------------------------------------------------
    async def resolve(self, token: str | None) -> SignedIn | None:
        """The live session a cookie token names, or None."""
        if not token or len(token) > 128:
            return None
        row = await self.db.read(
            lambda tx: tx.session.execute(
                select(ConsoleSession, Account)
                .join(Account, Account.id == ConsoleSession.account_id)
                .where(ConsoleSession.id == _digest(token))
            ).first()
        )
        if row is None or row[0].expires_at <= utcnow():
            return None
        return SignedIn(account=row[1], csrf_token=row[0].csrf_token, session_id=row[0].id)

    async def sign_out(self, session_id: str) -> None:
        await self.db.write(
            lambda tx: tx.session.execute(
                delete(ConsoleSession).where(ConsoleSession.id == session_id)
            )
        )
