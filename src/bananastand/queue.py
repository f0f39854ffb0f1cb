"""Scale-out dispatch: generations run in `bananastand worker` processes, fed by
procrastinate, a task queue that keeps its jobs in PostgreSQL.

Why procrastinate: the jobs live in the same PostgreSQL as the ledger, so a job
survives any process — and Redis — restarting (Redis here keeps nothing on
disk); it is asyncio-native like the rest of the server; workers heartbeat, so
the jobs of a dead worker are found and retried; and its locks keep two jobs of
one generation from running at once.

Every job is one generation, locked (`lock`, `queueing_lock`) by its id. API
processes only `dispatch()` and `wait()`; waiting follows the progress stream,
with the database as the last word.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from procrastinate import App, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from bananastand.config import Settings

log = logging.getLogger(__name__)

TASK_NAME = "bananastand.run_generation"
QUEUE = "generations"

Execute = Callable[[str], Awaitable[None]]
Follow = Callable[..., AsyncIterator[Any]]


def conninfo(database_url: str) -> str:
    """libpq connection string from the SQLAlchemy URL (`postgresql+psycopg://…`)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class QueueDispatcher:
    """Hands generations to worker processes; used by API and worker processes."""

    hands_back_all_modes = True  # a worker that stops re-queues sync and stream jobs too

    def __init__(self, settings: Settings, execute: Execute) -> None:
        self.settings = settings
        self._execute = execute
        self.app = App(
            connector=PsycopgConnector(
                conninfo=conninfo(settings.resolved_database_url),
                min_size=1,
                max_size=max(4, settings.worker_concurrency + 2),
            )
        )
        self.task = self.app.task(name=TASK_NAME, queue=QUEUE, pass_context=False)(self._run)
        self._follow: Follow | None = None

    def follow(self, follow: Follow) -> None:
        """How `wait()` learns that a generation ended (`GenerationService.follow`)."""
        self._follow = follow

    async def _run(self, generation_id: str) -> None:
        await self._execute(generation_id)

    async def start(self) -> None:
        await self.app.open_async()

    async def stop(self, *, grace_seconds: float = 10.0) -> None:
        await self.app.close_async()

    async def dispatch(self, generation_id: str, mode: str) -> None:
        """Queue the generation's job; a second job for the same waiting one is refused."""
        try:
            await self.task.configure(lock=generation_id, queueing_lock=generation_id).defer_async(
                generation_id=generation_id
            )
        except AlreadyEnqueued:
            log.debug("generation %s already has a waiting job", generation_id)

    async def cancel(self, generation_id: str) -> None:
        """Abort the generation's job, waiting or running (it was settled already)."""
        jobs = self.app.job_manager
        for status in ("todo", "doing"):
            for job in await jobs.list_jobs_async(lock=generation_id, status=status):
                if job.id is not None:
                    await jobs.cancel_job_by_id_async(job.id, abort=True)

    async def wait(self, generation_id: str) -> None:
        """Return once the generation is settled, wherever it runs."""
        assert self._follow is not None
        async for _event in self._follow(generation_id, idle_timeout=2.0):
            pass

    async def run_worker(self, *, install_signal_handlers: bool = True) -> None:
        """Run jobs until SIGTERM/SIGINT (or cancellation); running ones get the
        grace period to finish, then are handed back to the queue."""
        await self.app.run_worker_async(
            queues=[QUEUE],
            concurrency=self.settings.worker_concurrency,
            install_signal_handlers=install_signal_handlers,
            shutdown_graceful_timeout=self.settings.shutdown_grace_seconds,
            update_heartbeat_interval=self.settings.worker_heartbeat_seconds,
            stalled_worker_timeout=self.settings.worker_stall_seconds,
            delete_jobs="successful",
            listen_notify=True,
            fetch_job_polling_interval=2.0,
        )

    async def retry_stalled(self) -> int:
        """Put the jobs of dead workers (no heartbeat) back in the queue."""
        retried = 0
        stalled = await self.app.job_manager.get_stalled_jobs(
            queue=QUEUE, seconds_since_heartbeat=self.settings.worker_stall_seconds
        )
        for job in stalled:
            try:
                await self.app.job_manager.retry_job(job)
                retried += 1
            except Exception:  # another worker's janitor got there first
                log.debug("stalled job %s already handled", job.id)
        return retried
