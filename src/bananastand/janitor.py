"""Housekeeping that keeps scale-out honest, run by every worker process.

Each round:
- renews the Redis leases of every generation the database says is in
  progress (and restores them after a Redis restart);
- puts the jobs of dead workers (no heartbeat) back in the queue;
- re-dispatches generations left without a job (an API process died between
  admitting and dispatching, or a job was lost);
- fails and refunds generations older than `generation_max_age_seconds`;
- deletes the bytes of expired images (and, hourly, of orphans) from the store.
Rounds in several workers at once are harmless: every step is idempotent, and
settlement happens exactly once whoever calls it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy import select, text
from sqlalchemy.exc import InterfaceError, OperationalError

from bananastand.db.models import Generation, utcnow
from bananastand.errors import StorageUnavailable
from bananastand.generations import IS_IN_PROGRESS, TERMINAL
from bananastand.pipeline import GenerationService
from bananastand.queue import QueueDispatcher
from bananastand.redis_slots import RedisSlots

log = logging.getLogger(__name__)

# A generation this young may simply not have reached the queue yet.
_ORPHAN_AFTER = timedelta(seconds=30)


class Janitor:
    def __init__(
        self, service: GenerationService, dispatcher: QueueDispatcher, slots: RedisSlots
    ) -> None:
        self.service = service
        self.dispatcher = dispatcher
        self.slots = slots
        self.settings = service.settings

    async def run_forever(self) -> None:
        failing = False
        while True:
            try:
                await self.round()
                if failing:
                    log.info("janitor rounds work again")
                failing = False
            except (
                OSError,
                RedisError,
                OperationalError,
                InterfaceError,
                StorageUnavailable,
            ) as exc:
                # Redis, the database or the bucket is away: one line when it starts, not a
                # traceback every round.
                if not failing:
                    log.warning(
                        "janitor round failed (%s); retrying each round", type(exc).__name__
                    )
                failing = True
            except Exception:
                log.exception("janitor round failed; retrying next round")
            await asyncio.sleep(self.settings.janitor_interval_seconds)

    async def round(self) -> dict[str, int]:
        in_progress = await self.service.generations.in_progress()
        await self.slots.renew(
            [(g.account_id, g.id) for g in in_progress],
            queued=[g.id for g in in_progress if g.state == "queued" and g.mode == "async"],
            queue_lease_seconds=self.settings.generation_max_age_seconds,
        )
        # A generation may have started or settled (releasing its queue place or slot)
        # between the read and the renewal: undo those, or someone waits for nothing.
        now = await self.service.generations.states_of([g.id for g in in_progress])
        for record in in_progress:
            state = now.get(record.id)
            if state in TERMINAL:
                await self.slots.release(record.account_id, record.id)
            elif state != "queued" and record.state == "queued":
                await self.slots.dequeue(record.id)
        retried = await self.dispatcher.retry_stalled()
        expired = await self.service.expire_overdue()
        orphans = await self._redispatch_orphans()
        swept = await self.service.sweep_expired()
        report = {"retried": retried, "expired": expired, "redispatched": orphans, "swept": swept}
        if any(report.values()):
            log.info("janitor: %s", report)
        return report

    async def _redispatch_orphans(self) -> int:
        """In-progress generations with no waiting or running job get a new one."""
        query = select(Generation.id, Generation.mode, Generation.state).where(
            IS_IN_PROGRESS,
            Generation.created_at < utcnow() - _ORPHAN_AFTER,
            text(
                "NOT EXISTS (SELECT 1 FROM procrastinate_jobs j "
                "WHERE j.lock = generations.id AND j.status IN ('todo', 'doing'))"
            ),
        )
        orphans = await self.service.generations.db.read(
            lambda tx: [tuple(row) for row in tx.session.execute(query)]
        )
        for generation_id, mode, state in orphans:
            if state == "running":
                await self.service.generations.requeue(generation_id)
            await self.dispatcher.dispatch(generation_id, mode)
        return len(orphans)
