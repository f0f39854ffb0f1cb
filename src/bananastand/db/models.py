"""SQLAlchemy models: the tables behind accounts, keys, the credit ledger,
generations and their images. SQLite and PostgreSQL share this code."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back timezone-aware UTC datetimes (SQLite forgets zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    api_access: Mapped[bool] = mapped_column(Boolean, default=False)
    is_pro: Mapped[bool] = mapped_column(Boolean, default=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # None: the server's default limit.
    concurrency_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The sum of the account's ledger, changed in the same transaction as each entry
    # (`billing.add_entry`); what requests read. `admin reconcile` proves it.
    balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Its generations queued or running (the concurrency slots taken): one more at
    # each admission, one less at each settlement, in their transactions; what
    # admission reads instead of counting the account's backlog.
    active_generations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Argon2 hash of the console password; None: the account cannot sign in.
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Signs the account's webhooks (Standard Webhooks `whsec_…`); made on first use.
    webhook_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The secret before the last rotation, still signed with until `webhook_rotated_at`
    # is a day old, so receivers can switch over without losing messages.
    webhook_previous_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    webhook_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When a recharge crossing the threshold turned API access on by itself (None: it
    # did not, or it was turned off since). A refund that takes the total back under
    # the threshold turns access off again only if it was on by this alone.
    api_access_auto_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LedgerEntry(Base):
    """One change of an account's credits. The balance is the sum of these."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_account_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    # The account's balance right after this entry (a running balance).
    balance_after: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reason: Mapped[str] = mapped_column(String(32))
    generation_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Recharge(Base):
    """Money paid in; the cumulative sum in the server's currency unlocks API access."""

    __tablename__ = "recharges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    money_amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(8))
    credits: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Payment(Base):
    """One self-serve purchase of credits through Stripe Checkout, from the session
    made for it to the credits it bought, and any money that went back.

    Amounts are integers in the currency's minor unit (fen, cents; yen as is).
    status: pending (session open) -> processing (completed, a delayed method still
    settling) -> paid -> partially_refunded | refunded | disputed_lost; or expired,
    failed (a delayed method failed), mismatch (paid an amount or currency other
    than the package's: nothing credited, for an admin to settle), error (no
    session could be made)."""

    __tablename__ = "payments"
    __table_args__ = (Index("ix_payments_account_created", "account_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    credits: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(24))
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    charge_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    receipt_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The recharge (money in, credits bought) it recorded when paid.
    recharge_id: Mapped[int | None] = mapped_column(ForeignKey("recharges.id"), nullable=True)
    # Money gone back (cumulative, as Stripe reports it), and the credits that took back.
    amount_refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    amount_disputed_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    credits_clawed_back: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Credits that should have gone back but had been spent (never below zero).
    credits_shortfall: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StripeEvent(Base):
    """A Stripe event already acted on: a redelivery (same id) changes nothing."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # evt_…
    type: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Generations holding a concurrency slot: queued or running. Spelled out literally
# so that the partial indexes below serve every query that says the same
# (`generations.in_progress()`): they hold only the few live rows, so a query over
# them stays cheap however long an account's finished history grows, whatever the
# planner's statistics say about it.
IN_PROGRESS_SQL = "state IN ('queued', 'running')"


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        # The history page: an account's generations newest first, by keyset.
        Index("ix_generations_account_created", "account_id", "created_at", "id"),
        # An account's generations in progress (admission counts them).
        Index(
            "ix_generations_active_account",
            "account_id",
            sqlite_where=text(IN_PROGRESS_SQL),
            postgresql_where=text(IN_PROGRESS_SQL),
        ),
        # All generations in progress, oldest first (the queue, recovery, the janitor).
        Index(
            "ix_generations_active_created",
            "created_at",
            sqlite_where=text(IN_PROGRESS_SQL),
            postgresql_where=text(IN_PROGRESS_SQL),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prompt: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(16))
    aspect_ratio: Mapped[str] = mapped_column(String(16), default="default")
    quantity: Mapped[int] = mapped_column(Integer)
    reference_urls: Mapped[list[str]] = mapped_column(JSON, default=list)
    seed: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # queued -> running -> completed | failed   (queued and running read "processing")
    state: Mapped[str] = mapped_column(String(16))
    unit_cost: Mapped[int] = mapped_column(BigInteger)
    credits_charged: Mapped[int] = mapped_column(BigInteger)
    credits_used: Mapped[int] = mapped_column(BigInteger)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    warning_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    images: Mapped[list[StoredImage]] = relationship(
        back_populates="generation", order_by="StoredImage.position", lazy="selectin"
    )


class StoredImage(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    position: Mapped[int] = mapped_column(Integer)
    extension: Mapped[str] = mapped_column(String(8))
    mime_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    generation: Mapped[Generation] = relationship(back_populates="images")


class IdempotencyKey(Base):
    """An `Idempotency-Key` a client sent, and the generation it created."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("account_id", "key", name="uq_idempotency_account_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    generation_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is kept."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LoginAttempt(Base):
    """One sign-in try, kept for a while to rate-limit guessing."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email_at", "email", "created_at"),
        Index("ix_login_attempts_ip_at", "ip", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """A state-changing admin action: who did what to which account."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(320))  # an admin's email, or "cli"
    action: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class WebhookDelivery(Base):
    """One webhook message (a generation's end) and where its delivery stands."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # webhook-id: msg_…
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    generation_id: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    # pending -> delivered | failed
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    tries: Mapped[list[WebhookAttempt]] = relationship(
        order_by="WebhookAttempt.number", lazy="selectin"
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
