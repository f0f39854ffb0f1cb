"""Generation records: admission, state changes and settlement.

States: `queued` -> `running` -> `completed` | `failed`. The first two are
"in progress": they hold one of the account's concurrency slots and read as
`processing` to clients. A generation leaves them exactly once, through
`settle()`, which also refunds what was not produced; a second settlement of
the same generation changes nothing.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bananastand.accounts import lock_account
from bananastand.billing import add_entry, balance_in
from bananastand.db import Database
from bananastand.db.models import (
    Generation,
    IdempotencyKey,
    StoredImage,
    WebhookDelivery,
    utcnow,
)
from bananastand.errors import (
    ConcurrencyLimitExceeded,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    ServerBusy,
)

IN_PROGRESS = ("queued", "running")
TERMINAL = ("completed", "failed")


@dataclass(frozen=True)
class NewGeneration:
    id: str
    account_id: str
    api_key_id: str | None
    prompt: str
    model: str
    mode: str
    aspect_ratio: str
    quantity: int
    reference_urls: list[str]
    seed: int
    unit_cost: int
    # (Idempotency-Key header, hash of the request) when the client sent one
    idempotency: tuple[str, str] | None = None
    callback_url: str | None = None  # webhook target, already vetted

    @property
    def total_cost(self) -> int:
        return self.unit_cost * self.quantity


@dataclass(frozen=True)
class ImageFile:
    """An image already written to storage, to be recorded at settlement."""

    id: str
    extension: str
    mime_type: str
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True)
class Settled:
    generation: Generation
    balance: int
    changed: bool  # False when the generation had already been settled


class Replay(Exception):
    """The request repeats an Idempotency-Key: answer with its generation."""

    def __init__(self, generation_id: str) -> None:
        super().__init__(generation_id)
        self.generation_id = generation_id


IDEMPOTENCY_WINDOW = timedelta(hours=24)


# Estimates how many seconds a generation of `model` with `quantity` images takes.
DurationEstimate = Callable[[str, int], float]


def format_time(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, as the contract shows."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class Generations:
    def __init__(self, db: Database, *, estimate: DurationEstimate) -> None:
        self.db = db
        self.estimate = estimate

    async def admit(
        self,
        new: NewGeneration,
        *,
        default_limit: int,
        queue_size: int | None,
        queue_workers: int,
        db_limits: bool = True,
    ) -> tuple[Generation, int]:
        """In one transaction: check credits, the account's concurrency slots and
        (async) the queue, then charge and record. Returns (record, balance).
        With `db_limits=False` the slots and the queue are Redis's (scale-out)."""
        async with self.db.write() as session:
            account = await lock_account(session, new.account_id)
            if new.idempotency is not None:
                # Under the account lock: of two requests with one key, one creates.
                await _claim_idempotency(session, new)
            balance = await balance_in(session, account.id)
            if balance < new.total_cost:
                raise InsufficientCredits(
                    f"Insufficient credits: this generation costs {new.total_cost}, "
                    f"the balance is {balance}"
                )
            limit = account.concurrency_limit or default_limit
            active = (
                []
                if not db_limits
                else list(
                    (
                        await session.execute(
                            select(
                                Generation.model, Generation.quantity, Generation.started_at
                            ).where(
                                Generation.account_id == account.id,
                                Generation.state.in_(IN_PROGRESS),
                            )
                        )
                    ).all()
                )
            )
            if len(active) >= limit:
                raise ConcurrencyLimitExceeded(
                    limit=limit, active=len(active), retry_after=self._slot_eta(active)
                )
            if queue_size is not None and db_limits:
                waiting = await session.scalar(
                    select(func.count(Generation.id)).where(Generation.state == "queued")
                )
                if (waiting or 0) >= queue_size:
                    per_job = self.estimate(new.model, new.quantity)
                    raise ServerBusy(
                        retry_after=max(1, math.ceil(per_job * (waiting or 0) / queue_workers))
                    )
            now = utcnow()
            record = Generation(
                id=new.id,
                account_id=account.id,
                api_key_id=new.api_key_id,
                prompt=new.prompt,
                model=new.model,
                mode=new.mode,
                aspect_ratio=new.aspect_ratio,
                quantity=new.quantity,
                reference_urls=new.reference_urls,
                callback_url=new.callback_url,
                seed=new.seed,
                state="queued",
                unit_cost=new.unit_cost,
                credits_charged=new.total_cost,
                credits_used=new.total_cost,
                created_at=now,
            )
            session.add(record)
            add_entry(session, account.id, -new.total_cost, "generation", generation_id=new.id)
            return record, balance - new.total_cost

    def _slot_eta(self, active: Sequence[tuple[str, int, datetime | None]]) -> int:
        """Seconds until the soonest of the running generations should end."""
        now = utcnow()
        remaining = []
        for model, quantity, started_at in active:
            expected = self.estimate(model, quantity)
            elapsed = (now - started_at).total_seconds() if started_at else 0.0
            remaining.append(max(expected - elapsed, 0.0))
        return max(1, math.ceil(min(remaining))) if remaining else 1

    async def claim(self, generation_id: str) -> int | None:
        """Start (or, after a lost worker, restart) a run: -> running, one more
        attempt. Returns the attempt number, or None when the generation has ended."""
        async with self.db.write() as session:
            record = await session.scalar(
                select(Generation).where(Generation.id == generation_id).with_for_update()
            )
            if record is None or record.state not in IN_PROGRESS:
                return None
            record.state = "running"
            record.started_at = utcnow()
            record.attempts += 1
            return record.attempts

    async def requeue(self, generation_id: str, *, hand_back: bool = False) -> None:
        """Back to `queued`; a hand-back (graceful stop) does not count as an attempt."""
        values: dict[str, object] = {"state": "queued", "started_at": None}
        if hand_back:
            values["attempts"] = Generation.attempts - 1
        async with self.db.write() as session:
            await session.execute(
                update(Generation)
                .where(Generation.id == generation_id, Generation.state.in_(IN_PROGRESS))
                .values(**values)
            )

    async def estimate_slot_eta(self, account_id: str) -> int:
        async with self.db.read() as session:
            active = (
                await session.execute(
                    select(Generation.model, Generation.quantity, Generation.started_at).where(
                        Generation.account_id == account_id, Generation.state.in_(IN_PROGRESS)
                    )
                )
            ).all()
        return self._slot_eta(list(active))  # type: ignore[arg-type]

    async def settle(
        self,
        generation_id: str,
        *,
        images: Sequence[ImageFile] = (),
        error: str | None = None,
        warning: str | None = None,
        image_ttl: timedelta,
    ) -> Settled:
        """End a generation exactly once: record the outcome and images, charge
        what was produced (a safety verdict is charged in full, as the public
        service does), refund the rest and free the concurrency slot."""
        async with self.db.write() as session:
            record = await session.scalar(
                select(Generation).where(Generation.id == generation_id).with_for_update()
            )
            if record is None:
                raise NotFound("No such generation")
            if record.state in TERMINAL:
                return Settled(record, await balance_in(session, record.account_id), False)
            now = utcnow()
            if warning is not None:
                record.state = "completed"
                record.warning_message = warning
                used = record.credits_charged
            elif images:
                record.state = "completed"
                used = min(record.unit_cost * len(images), record.credits_charged)
            else:
                record.state = "failed"
                record.error_message = error or "Generation failed"
                used = 0
            refund = record.credits_charged - used
            if refund:
                add_entry(
                    session,
                    record.account_id,
                    refund,
                    "refund",
                    generation_id=record.id,
                    note=f"{record.quantity - len(images)} of {record.quantity} images not produced"
                    if warning is None
                    else "",
                )
            record.credits_used = used
            record.finished_at = now
            if images and error and warning is None:
                record.error_message = error  # a partial result keeps its reason
            for position, image in enumerate(images):
                session.add(
                    StoredImage(
                        id=image.id,
                        generation_id=record.id,
                        account_id=record.account_id,
                        position=position,
                        extension=image.extension,
                        mime_type=image.mime_type,
                        width=image.width,
                        height=image.height,
                        size_bytes=image.size_bytes,
                        expires_at=now + image_ttl,
                        created_at=now,
                    )
                )
            if record.callback_url:
                # In the settlement's own transaction: a settled generation always
                # has its webhook message (sent by `webhooks`, whoever settled it).
                session.add(
                    WebhookDelivery(
                        id="msg_" + secrets.token_hex(12),
                        account_id=record.account_id,
                        generation_id=record.id,
                        url=record.callback_url,
                        payload="",  # the poll answer, built when sent
                        state="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
            await session.flush()
            await session.refresh(record, ["images"])
            return Settled(record, await balance_in(session, record.account_id), True)

    async def get(self, generation_id: str, *, account_id: str | None = None) -> Generation:
        """One record; with `account_id`, only if it is that account's (else 404)."""
        async with self.db.read() as session:
            query = select(Generation).where(Generation.id == generation_id)
            if account_id is not None:
                query = query.where(Generation.account_id == account_id)
            record = await session.scalar(query)
        if record is None:
            raise NotFound("Generation not found")
        return record

    async def page(
        self, account_id: str, *, limit: int, before: str | None = None
    ) -> list[Generation]:
        """The account's generations, newest first, older than the one with id `before`."""
        async with self.db.read() as session:
            query = select(Generation).where(Generation.account_id == account_id)
            if before:
                anchor = await session.scalar(
                    select(Generation).where(
                        Generation.id == before, Generation.account_id == account_id
                    )
                )
                if anchor is None:
                    raise NotFound("Unknown cursor: no such generation")
                query = query.where(
                    (Generation.created_at < anchor.created_at)
                    | ((Generation.created_at == anchor.created_at) & (Generation.id < anchor.id))
                )
            rows = await session.scalars(
                query.order_by(Generation.created_at.desc(), Generation.id.desc()).limit(limit)
            )
            return list(rows)

    async def queue_depth(self, *, jobs: bool = False) -> int:
        """Async generations waiting to run; with `jobs`, the task queue's waiting jobs
        (scale-out), which also proves the queue's tables answer."""
        async with self.db.read() as session:
            if jobs:
                count = await session.scalar(
                    text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
                )
            else:
                count = await session.scalar(
                    select(func.count(Generation.id)).where(Generation.state == "queued")
                )
        return int(count or 0)

    async def replayed(self, account_id: str, key: str, request_hash: str) -> Generation | None:
        """The generation an earlier request with this Idempotency-Key created
        (within 24 h), or None; 409 when that request's body was different."""
        async with self.db.read() as session:
            row = await session.scalar(
                select(IdempotencyKey).where(
                    IdempotencyKey.account_id == account_id,
                    IdempotencyKey.key == key,
                    IdempotencyKey.created_at > utcnow() - IDEMPOTENCY_WINDOW,
                )
            )
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise IdempotencyConflict()
        return await self.get(row.generation_id)

    async def states_of(self, generation_ids: Sequence[str]) -> dict[str, str]:
        if not generation_ids:
            return {}
        async with self.db.read() as session:
            rows = await session.execute(
                select(Generation.id, Generation.state).where(
                    Generation.id.in_(list(generation_ids))
                )
            )
            return {generation_id: state for generation_id, state in rows}

    async def is_settled(self, generation_id: str) -> bool:
        async with self.db.read() as session:
            state = await session.scalar(
                select(Generation.state).where(Generation.id == generation_id)
            )
        return state in TERMINAL

    async def in_progress(self) -> list[Generation]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Generation)
                .where(Generation.state.in_(IN_PROGRESS))
                .order_by(Generation.created_at)
            )
            return list(rows)

    async def expired_images(self, *, limit: int = 500) -> list[StoredImage]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(StoredImage)
                .where(StoredImage.expires_at <= utcnow(), StoredImage.deleted_at.is_(None))
                .limit(limit)
            )
            return list(rows)

    async def known_images(self, image_ids: Sequence[str]) -> set[str]:
        """Which of these ids have an image record (deleted or not)."""
        known: set[str] = set()
        async with self.db.read() as session:
            for start in range(0, len(image_ids), 500):
                chunk = list(image_ids[start : start + 500])
                rows = await session.scalars(
                    select(StoredImage.id).where(StoredImage.id.in_(chunk))
                )
                known.update(rows)
        return known

    async def mark_deleted(self, image_ids: Sequence[str]) -> None:
        if not image_ids:
            return
        async with self.db.write() as session:
            await session.execute(
                update(StoredImage)
                .where(StoredImage.id.in_(list(image_ids)))
                .values(deleted_at=utcnow())
            )


async def _claim_idempotency(session: AsyncSession, new: NewGeneration) -> None:
    assert new.idempotency is not None
    key, request_hash = new.idempotency
    existing = await session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.account_id == new.account_id, IdempotencyKey.key == key
        )
    )
    if existing is not None and existing.created_at > utcnow() - IDEMPOTENCY_WINDOW:
        if existing.request_hash != request_hash:
            raise IdempotencyConflict()
        raise Replay(existing.generation_id)
    if existing is not None:  # expired: the key may be used again
        await session.delete(existing)
        await session.flush()
    session.add(
        IdempotencyKey(
            account_id=new.account_id,
            key=key,
            request_hash=request_hash,
            generation_id=new.id,
            created_at=utcnow(),
        )
    )
