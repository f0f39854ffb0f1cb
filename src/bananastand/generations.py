"""Generation records: admission, state changes and settlement.

States: `queued` -> `running` -> `completed` | `failed`. The first two are
"in progress": they hold one of the account's concurrency slots and read as
`processing` to clients. A generation leaves them exactly once, through
`settle()`, which also refunds what was not produced; a second settlement of
the same generation changes nothing.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, select, text, tuple_, update
from sqlalchemy.orm import InstrumentedAttribute

from bananastand.accounts import lock_account
from bananastand.billing import add_entry, balance_in
from bananastand.db import Database, Query, Tx
from bananastand.db.models import (
    IN_PROGRESS_SQL,
    Account,
    Generation,
    IdempotencyKey,
    StoredImage,
    WebhookDelivery,
    utcnow,
)
from bananastand.db.tx import Row
from bananastand.errors import (
    ConcurrencyLimitExceeded,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    ServerBusy,
)

IN_PROGRESS = ("queued", "running")
TERMINAL = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """A stored image of a generation."""

    id: str
    position: int
    extension: str
    mime_type: str
    width: int
    height: int
    size_bytes: int
    expires_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """A generation as read from the database: its row and its images, in order."""

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
    attempts: int
    state: str
    unit_cost: int
    credits_charged: int
    credits_used: int
    error_message: str | None
    callback_url: str | None
    warning_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    images: tuple[ImageRecord, ...] = ()


_GENERATION_COLUMNS = (
    Generation.id,
    Generation.account_id,
    Generation.api_key_id,
    Generation.prompt,
    Generation.model,
    Generation.mode,
    Generation.aspect_ratio,
    Generation.quantity,
    Generation.reference_urls,
    Generation.seed,
    Generation.attempts,
    Generation.state,
    Generation.unit_cost,
    Generation.credits_charged,
    Generation.credits_used,
    Generation.error_message,
    Generation.callback_url,
    Generation.warning_message,
    Generation.created_at,
    Generation.started_at,
    Generation.finished_at,
)
_IMAGE_COLUMNS = (
    StoredImage.id,
    StoredImage.position,
    StoredImage.extension,
    StoredImage.mime_type,
    StoredImage.width,
    StoredImage.height,
    StoredImage.size_bytes,
    StoredImage.expires_at,
    StoredImage.deleted_at,
)
_G = len(_GENERATION_COLUMNS)


def _with_images(rows: Sequence[tuple[Any, ...]]) -> list[GenerationRecord]:
    """Records from rows of generation columns followed by one image's columns (or
    NULLs), ordered by generation then image position."""
    records: list[GenerationRecord] = []
    current: list[Any] | None = None
    images: list[ImageRecord] = []
    for row in rows:
        if current is None or row[0] != current[0]:
            if current is not None:
                records.append(GenerationRecord(*[*current, tuple(images)]))
            current, images = list(row[:_G]), []
        if row[_G] is not None:
            images.append(ImageRecord(*row[_G:]))
    if current is not None:
        records.append(GenerationRecord(*[*current, tuple(images)]))
    return records


_WITH_IMAGES = select(*_GENERATION_COLUMNS, *_IMAGE_COLUMNS).outerjoin(
    StoredImage, StoredImage.generation_id == Generation.id
)
_GET: Query[Row] = Query(
    _WITH_IMAGES.where(Generation.id == bindparam("generation_id")).order_by(StoredImage.position)
)
_GET_OWN: Query[Row] = Query(
    _WITH_IMAGES.where(
        Generation.id == bindparam("generation_id"),
        Generation.account_id == bindparam("account_id"),
    ).order_by(StoredImage.position)
)
_LOCK_GENERATION = Query(
    select(*_GENERATION_COLUMNS)
    .where(Generation.id == bindparam("generation_id"))
    .with_for_update(),
    into=GenerationRecord,
)
_IMAGES_OF = Query(
    select(*_IMAGE_COLUMNS)
    .where(StoredImage.generation_id == bindparam("generation_id"))
    .order_by(StoredImage.position),
    into=ImageRecord,
)
# Generations holding a slot, said exactly as the partial indexes over them say it.
IS_IN_PROGRESS = text(f"generations.{IN_PROGRESS_SQL}")
_STATE: Query[str] = Query(
    select(Generation.state).where(Generation.id == bindparam("generation_id"))
)
_ACTIVE: Query[Row] = Query(
    select(Generation.model, Generation.quantity, Generation.started_at).where(
        Generation.account_id == bindparam("account_id"), IS_IN_PROGRESS
    )
)
# The slots an account holds, kept on its row (see `db.models.Account`).
_SLOTS_TAKEN: Query[Row] = Query(
    update(Account)
    .where(Account.id == bindparam("account_id"))
    .values(active_generations=Account.active_generations + bindparam("change"))
)
_WAITING: Query[int] = Query(
    select(func.count(Generation.id)).where(IS_IN_PROGRESS, Generation.state == "queued")
)
_INSERT: Query[Row] = Query(
    insert(Generation).values({column.key: bindparam(column.key) for column in _GENERATION_COLUMNS})
)
_CLAIM: Query[int] = Query(
    update(Generation)
    .where(Generation.id == bindparam("generation_id"), IS_IN_PROGRESS)
    .values(state="running", started_at=bindparam("now"), attempts=Generation.attempts + 1)
    .returning(Generation.attempts)
)
_FINISH: Query[Row] = Query(
    update(Generation)
    .where(Generation.id == bindparam("generation_id"))
    .values(
        state=bindparam("state"),
        credits_used=bindparam("credits_used"),
        error_message=bindparam("error_message"),
        warning_message=bindparam("warning_message"),
        finished_at=bindparam("finished_at"),
    )
)
_INSERT_IMAGE: Query[Row] = Query(
    insert(StoredImage).values(
        generation_id=bindparam("generation_id"),
        account_id=bindparam("account_id"),
        created_at=bindparam("created_at"),
        **{column.key: bindparam(column.key) for column in _IMAGE_COLUMNS},
    )
)
_INSERT_WEBHOOK: Query[Row] = Query(
    insert(WebhookDelivery).values(
        id=bindparam("id"),
        account_id=bindparam("account_id"),
        generation_id=bindparam("generation_id"),
        url=bindparam("url"),
        payload="",  # the poll answer, built when sent
        state="pending",
        attempts=0,
        next_attempt_at=bindparam("now"),
        created_at=bindparam("now"),
    )
)


# Which generations each history filter's status means (`processing` is how
# clients see the two in-progress states; `blocked`: ended by a safety verdict).
STATUSES = ("processing", "completed", "failed", "blocked")
_STATUS_WHERE: dict[str, Any] = {
    "processing": IS_IN_PROGRESS,
    "completed": and_(Generation.state == "completed", Generation.warning_message.is_(None)),
    "failed": Generation.state == "failed",
    "blocked": and_(Generation.state == "completed", Generation.warning_message.is_not(None)),
}


def history_status(record: GenerationRecord) -> str:
    """How the console names a generation's state: `processing`, `completed`,
    `failed`, or `blocked` (completed with a safety verdict instead of images)."""
    if record.state in IN_PROGRESS:
        return "processing"
    if record.state == "completed" and record.warning_message is not None:
        return "blocked"
    return record.state


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """What a history page is narrowed to; every part optional."""

    status: str | None = None  # one of STATUSES
    model: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


# The history page, newest first, by keyset on (created_at, id): one range of the
# (account_id, created_at, id) index, joined with the page's images in one statement.
# A date filter narrows that range; status and model are checked on the rows the
# range walks, so a page costs at most the rows between its two ends.
@functools.cache
def _history_page(
    *,
    before: bool,
    status: str | None = None,
    model: bool = False,
    since: bool = False,
    until: bool = False,
) -> Query[tuple[Any, ...]]:
    created_at = Generation.created_at
    newest = select(Generation.id).where(Generation.account_id == bindparam("account_id"))
    if before:
        newest = newest.where(
            tuple_(created_at, Generation.id)
            < tuple_(bindparam("created_at", type_=created_at.type), bindparam("id"))
        )
    if since:
        newest = newest.where(created_at >= bindparam("since", type_=created_at.type))
    if until:
        newest = newest.where(created_at < bindparam("until", type_=created_at.type))
    if status is not None:
        newest = newest.where(_STATUS_WHERE[status])
    if model:
        newest = newest.where(Generation.model == bindparam("model"))
    page = (
        newest.order_by(created_at.desc(), Generation.id.desc())
        .limit(bindparam("limit"))
        .subquery()
    )
    return Query(
        _WITH_IMAGES.join(page, page.c.id == Generation.id).order_by(
            created_at.desc(), Generation.id.desc(), StoredImage.position
        )
    )


_ANCHOR: Query[Row] = Query(
    select(Generation.created_at, Generation.id).where(
        Generation.id == bindparam("generation_id"),
        Generation.account_id == bindparam("account_id"),
    )
)


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
    generation: GenerationRecord
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
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


class _Finished:
    """The most recently read finished generations. A generation that has ended
    never changes again (settlement happens once; expiry only deletes bytes), so
    its record can be answered from memory, in any process, for as long as it is
    kept here."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._records: OrderedDict[str, GenerationRecord] = OrderedDict()

    def get(self, generation_id: str) -> GenerationRecord | None:
        record = self._records.get(generation_id)
        if record is not None:
            self._records.move_to_end(generation_id)
        return record

    def keep(self, record: GenerationRecord) -> None:
        if record.state in TERMINAL:
            self._records[record.id] = record
            self._records.move_to_end(record.id)
            if len(self._records) > self.size:
                self._records.popitem(last=False)


class Generations:
    def __init__(
        self, db: Database, *, estimate: DurationEstimate, cache_size: int = 10_000
    ) -> None:
        self.db = db
        self.estimate = estimate
        self._finished = _Finished(cache_size)

    async def admit(
        self,
        new: NewGeneration,
        *,
        default_limit: int,
        queue_size: int | None,
        queue_workers: int,
        waiting: int = 0,
        db_queue: bool = True,
        start_now: bool = False,
    ) -> tuple[GenerationRecord, int]:
        """In one transaction: check credits, the account's concurrency slots and
        (async, with a `queue_size`) that fewer than that many generations are
        `waiting` in the queue, then charge and record. Returns (record, balance).
        The slots are always counted here, under the account's lock: the database
        is their truth (scale-out's Redis slot set may be incomplete, e.g. just
        after Redis restarted). With `db_queue=False` the queue is Redis's.
        `start_now`: the caller runs it at once, so it is recorded as running (its
        first attempt) and needs no claim."""

        def work(tx: Tx) -> tuple[GenerationRecord, int]:
            account = lock_account(tx, new.account_id)
            if new.idempotency is not None:
                # Under the account lock: of two requests with one key, one creates.
                _claim_idempotency(tx, new)
            if account.balance < new.total_cost:
                raise InsufficientCredits(
                    f"Insufficient credits: this generation costs {new.total_cost}, "
                    f"the balance is {account.balance}"
                )
            limit = account.concurrency_limit or default_limit
            active = account.active_generations
            if active >= limit:
                eta = self._slot_eta(tx.all(_ACTIVE, account_id=account.id))
                raise ConcurrencyLimitExceeded(limit=limit, active=active, retry_after=eta)
            if db_queue and queue_size is not None and waiting >= queue_size:
                per_job = self.estimate(new.model, new.quantity)
                raise ServerBusy(retry_after=max(1, math.ceil(per_job * waiting / queue_workers)))
            now = utcnow()
            record = GenerationRecord(
                id=new.id,
                account_id=account.id,
                api_key_id=new.api_key_id,
                prompt=new.prompt,
                model=new.model,
                mode=new.mode,
                aspect_ratio=new.aspect_ratio,
                quantity=new.quantity,
                reference_urls=new.reference_urls,
                seed=new.seed,
                attempts=1 if start_now else 0,
                state="running" if start_now else "queued",
                unit_cost=new.unit_cost,
                credits_charged=new.total_cost,
                credits_used=new.total_cost,
                error_message=None,
                callback_url=new.callback_url,
                warning_message=None,
                created_at=now,
                started_at=now if start_now else None,
                finished_at=None,
            )
            tx.run(
                _INSERT,
                **{column.key: getattr(record, column.key) for column in _GENERATION_COLUMNS},
            )
            tx.run(_SLOTS_TAKEN, account_id=account.id, change=1)
            balance = add_entry(tx, account.id, -new.total_cost, "generation", generation_id=new.id)
            return record, balance

        return await self.db.write(work)

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
        now = utcnow()
        attempt = await self.db.write(
            lambda tx: tx.scalar(_CLAIM, generation_id=generation_id, now=now)
        )
        return None if attempt is None else int(attempt)

    async def requeue(self, generation_id: str, *, hand_back: bool = False) -> None:
        """Back to `queued`; a hand-back (graceful stop) of a running generation does
        not count as an attempt (a queued one has had no attempt to give back)."""
        values: dict[str, object] = {"state": "queued", "started_at": None}
        if hand_back:
            values["attempts"] = case(
                (
                    and_(Generation.state == "running", Generation.attempts > 0),
                    Generation.attempts - 1,
                ),
                else_=Generation.attempts,
            )

        def work(tx: Tx) -> None:
            tx.session.execute(
                update(Generation)
                .where(Generation.id == generation_id, Generation.state.in_(IN_PROGRESS))
                .values(**values)
            )

        await self.db.write(work)

    async def estimate_slot_eta(self, account_id: str) -> int:
        active = await self.db.read(lambda tx: tx.all(_ACTIVE, account_id=account_id))
        return self._slot_eta(active)

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

        def work(tx: Tx) -> Settled:
            record = tx.one(_LOCK_GENERATION, generation_id=generation_id)
            if record is None:
                raise NotFound("No such generation")
            if record.state in TERMINAL:
                stored = tuple(tx.all(_IMAGES_OF, generation_id=record.id))
                return Settled(
                    replace(record, images=stored), balance_in(tx, record.account_id), False
                )
            now = utcnow()
            warning_message = record.warning_message
            error_message = record.error_message
            if warning is not None:
                state = "completed"
                warning_message = warning
                used = record.credits_charged
            elif images:
                state = "completed"
                used = min(record.unit_cost * len(images), record.credits_charged)
                if error:
                    error_message = error  # a partial result keeps its reason
            else:
                state = "failed"
                error_message = error or "Generation failed"
                used = 0
            refund = record.credits_charged - used
            if refund:
                balance = add_entry(
                    tx,
                    record.account_id,
                    refund,
                    "refund",
                    generation_id=record.id,
                    note=f"{record.quantity - len(images)} of {record.quantity} images not produced"
                    if warning is None
                    else "",
                )
            else:
                balance = balance_in(tx, record.account_id)
            tx.run(
                _FINISH,
                generation_id=record.id,
                state=state,
                credits_used=used,
                error_message=error_message,
                warning_message=warning_message,
                finished_at=now,
            )
            tx.run(_SLOTS_TAKEN, account_id=record.account_id, change=-1)
            made: list[ImageRecord] = []
            for position, image in enumerate(images):
                row = ImageRecord(
                    id=image.id,
                    position=position,
                    extension=image.extension,
                    mime_type=image.mime_type,
                    width=image.width,
                    height=image.height,
                    size_bytes=image.size_bytes,
                    expires_at=now + image_ttl,
                    deleted_at=None,
                )
                tx.run(
                    _INSERT_IMAGE,
                    generation_id=record.id,
                    account_id=record.account_id,
                    created_at=now,
                    **{column.key: getattr(row, column.key) for column in _IMAGE_COLUMNS},
                )
                made.append(row)
            if record.callback_url:
                # In the settlement's own transaction: a settled generation always
                # has its webhook message (sent by `webhooks`, whoever settled it).
                tx.run(
                    _INSERT_WEBHOOK,
                    id="msg_" + secrets.token_hex(12),
                    account_id=record.account_id,
                    generation_id=record.id,
                    url=record.callback_url,
                    now=now,
                )
            settled = replace(
                record,
                state=state,
                credits_used=used,
                error_message=error_message,
                warning_message=warning_message,
                finished_at=now,
                images=tuple(made),
            )
            return Settled(settled, balance, True)

        settled = await self.db.write(work)
        self._finished.keep(settled.generation)
        return settled

    async def get(self, generation_id: str, *, account_id: str | None = None) -> GenerationRecord:
        """One record; with `account_id`, only if it is that account's (else 404)."""
        kept = self._finished.get(generation_id)
        if kept is not None:
            if account_id is not None and kept.account_id != account_id:
                raise NotFound("Generation not found")
            return kept
        if account_id is None:
            rows = await self.db.fetch(_GET, generation_id=generation_id)
        else:
            rows = await self.db.fetch(_GET_OWN, generation_id=generation_id, account_id=account_id)
        records = _with_images(rows)
        if not records:
            raise NotFound("Generation not found")
        self._finished.keep(records[0])
        return records[0]

    async def get_with_balance(self, generation_id: str) -> tuple[GenerationRecord, int]:
        """A record and its account's balance, read together."""

        def work(tx: Tx) -> tuple[list[tuple[Any, ...]], int | None]:
            rows = tx.all(_GET, generation_id=generation_id)
            return rows, balance_in(tx, rows[0][1]) if rows else None

        rows, balance = await self.db.read(work)
        records = _with_images(rows)
        if not records or balance is None:
            raise NotFound("Generation not found")
        return records[0], balance

    async def page(
        self,
        account_id: str,
        *,
        limit: int,
        before: str | None = None,
        filters: HistoryFilter | None = None,
    ) -> list[GenerationRecord]:
        """The account's generations, newest first, older than the one with id
        `before`, narrowed to those matching `filters`."""
        wanted = filters or HistoryFilter()
        if wanted.status is not None and wanted.status not in STATUSES:
            raise ValueError(f"unknown status {wanted.status!r}")
        params: dict[str, Any] = {"account_id": account_id, "limit": limit}
        for name in ("model", "since", "until"):
            if getattr(wanted, name) is not None:
                params[name] = getattr(wanted, name)
        query = _history_page(
            before=bool(before),
            status=wanted.status,
            model="model" in params,
            since="since" in params,
            until="until" in params,
        )

        def work(tx: Tx) -> list[tuple[Any, ...]]:
            if before:
                anchor = tx.one(_ANCHOR, generation_id=before, account_id=account_id)
                if anchor is None:
                    raise NotFound("Unknown cursor: no such generation")
                params["created_at"], params["id"] = anchor
            return tx.all(query, **params)

        return _with_images(await self.db.read(work))

    async def queue_depth(self, *, jobs: bool = False) -> int:
        """Async generations waiting to run; with `jobs`, the task queue's waiting jobs
        (scale-out), which also proves the queue's tables answer."""

        def work(tx: Tx) -> int:
            if jobs:
                return int(
                    tx.session.scalar(
                        text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'")
                    )
                    or 0
                )
            return int(tx.scalar(_WAITING) or 0)

        return await self.db.read(work)

    async def replayed(
        self, account_id: str, key: str, request_hash: str
    ) -> GenerationRecord | None:
        """The generation an earlier request with this Idempotency-Key created
        (within 24 h), or None; 409 when that request's body was different."""

        def work(tx: Tx) -> IdempotencyKey | None:
            return tx.session.scalar(
                select(IdempotencyKey).where(
                    IdempotencyKey.account_id == account_id,
                    IdempotencyKey.key == key,
                    IdempotencyKey.created_at > utcnow() - IDEMPOTENCY_WINDOW,
                )
            )

        row = await self.db.read(work)
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise IdempotencyConflict()
        return await self.get(row.generation_id)

    async def states_of(self, generation_ids: Sequence[str]) -> dict[str, str]:
        if not generation_ids:
            return {}

        def work(tx: Tx) -> dict[str, str]:
            rows = tx.session.execute(
                select(Generation.id, Generation.state).where(
                    Generation.id.in_(list(generation_ids))
                )
            )
            return {generation_id: state for generation_id, state in rows}

        return await self.db.read(work)

    async def is_settled(self, generation_id: str) -> bool:
        rows = await self.db.fetch(_STATE, generation_id=generation_id)
        return bool(rows) and rows[0][0] in TERMINAL

    async def in_progress(self) -> list[GenerationRecord]:
        def work(tx: Tx) -> list[tuple[Any, ...]]:
            return [
                tuple(row)
                for row in tx.connection.execute(
                    _WITH_IMAGES.where(IS_IN_PROGRESS).order_by(
                        Generation.created_at, Generation.id, StoredImage.position
                    )
                )
            ]

        return _with_images(await self.db.read(work))

    async def expired_images(self, *, limit: int = 500) -> list[StoredImage]:
        def work(tx: Tx) -> list[StoredImage]:
            return list(
                tx.session.scalars(
                    select(StoredImage)
                    .where(StoredImage.expires_at <= utcnow(), StoredImage.deleted_at.is_(None))
                    .limit(limit)
                )
            )

        return await self.db.read(work)

    async def known_images(self, image_ids: Sequence[str]) -> set[str]:
        """Which of these ids have an image record (deleted or not)."""
        return await self._which(image_ids, StoredImage.id)

    async def live(self, generation_ids: Sequence[str]) -> set[str]:
        """Which of these generations are still queued or running."""
        return await self._which(generation_ids, Generation.id, IS_IN_PROGRESS)

    async def _which(
        self, ids: Sequence[str], column: InstrumentedAttribute[str], *where: Any
    ) -> set[str]:
        """The ids among `ids` that `column` holds (in rows matching `where`), asked
        in chunks that stay under every driver's parameter limit."""

        def work(tx: Tx) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                found.update(tx.session.scalars(select(column).where(column.in_(chunk), *where)))
            return found

        return await self.db.read(work)

    async def mark_deleted(self, image_ids: Sequence[str]) -> None:
        if not image_ids:
            return

        def work(tx: Tx) -> None:
            tx.session.execute(
                update(StoredImage)
                .where(StoredImage.id.in_(list(image_ids)))
                .values(deleted_at=utcnow())
            )

        await self.db.write(work)


def _claim_idempotency(tx: Tx, new: NewGeneration) -> None:
    assert new.idempotency is not None
    key, request_hash = new.idempotency
    session = tx.session
    existing = session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.account_id == new.account_id, IdempotencyKey.key == key
        )
    )
    if existing is not None and existing.created_at > utcnow() - IDEMPOTENCY_WINDOW:
        if existing.request_hash != request_hash:
            raise IdempotencyConflict()
        raise Replay(existing.generation_id)
    if existing is not None:  # expired: the key may be used again
        session.delete(existing)
        session.flush()
    session.add(
        IdempotencyKey(
            account_id=new.account_id,
            key=key,
            request_hash=request_hash,
            generation_id=new.id,
            created_at=utcnow(),
        )
    )
