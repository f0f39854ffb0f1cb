"""Dynamic batching: requests that can share one model call are run together.

A caller `submit`s a payload under a *key* (everything that must be equal for
payloads to share a call: model, size, steps, ...) with a *size* (the images
it needs). Per key, the first waiting job opens a collection window of
`window_s` seconds; the window ends early once `max_batch` images wait. Then
the batcher takes a device slot from `limiter` (at most that many calls run at
once) and takes, oldest first, the waiting jobs that fit in `max_batch`
images; a job that does not fit stays for the next call (and, being the
oldest, leads it). While the device is busy, new jobs keep collecting, so a
loaded device makes larger batches by itself.

`run(key, jobs)` makes one call for the whole batch and returns one result per
job, in order; each submitter gets its own. If `run` raises, every job of the
batch gets the exception. Cancelling a submitter while its job waits removes
the job; cancelling it while its batch runs only drops its result: the batch
still finishes for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
P = TypeVar("P")
R = TypeVar("R")


class BatcherClosed(RuntimeError):
    """The batcher was closed: it takes no more work."""


@dataclass(eq=False)
class Job(Generic[P, R]):
    """One submitter's share of a batch."""

    payload: P
    size: int
    arrived: float  # loop time of submission
    future: asyncio.Future[R] = field(repr=False)

    @property
    def cancelled(self) -> bool:
        """True once its submitter has gone (timeout, shutdown): no one wants the result."""
        return self.future.cancelled()


class Batcher(Generic[K, P, R]):
    def __init__(
        self,
        run: Callable[[Any, Sequence[Job[P, R]]], Awaitable[Sequence[R]]],
        *,
        window_s: float,
        max_batch: int,
        limiter: asyncio.Semaphore | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self.window_s = max(0.0, window_s)
        self.max_batch = max_batch
        self.limiter = limiter
        self._pending: dict[K, list[Job[P, R]]] = {}
        self._drainers: dict[K, asyncio.Task[None]] = {}
        self._wake: dict[K, asyncio.Event] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Condition | None = None
        self._closed = False

    # --- submitting ---------------------------------------------------------------
    async def submit(self, key: K, payload: P, *, size: int = 1) -> R:
        """Queue `payload` under `key` and wait for its own result."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        if size < 1:
            raise ValueError("size must be at least 1")
        loop = asyncio.get_running_loop()
        job: Job[P, R] = Job(payload, size, loop.time(), loop.create_future())
        self._pending.setdefault(key, []).append(job)
        if key in self._drainers:
            self._wake[key].set()
        else:
            self._wake[key] = asyncio.Event()
            self._drainers[key] = asyncio.create_task(self._drain(key), name=f"batch-{key!r}")
        try:
            await self._notify()
            # Not shielded: cancelling the submitter cancels the future, so a
            # running batch skips it.
            return await job.future
        finally:
            self._forget(key, job)  # no-op unless it is still waiting

    # --- introspection (tests, metrics) -----------------------------------------------
    @property
    def pending_jobs(self) -> int:
        return sum(len(jobs) for jobs in self._pending.values())

    @property
    def pending_images(self) -> int:
        return sum(job.size for jobs in self._pending.values() for job in jobs)

    @property
    def running_batches(self) -> int:
        return len(self._running)

    async def wait_pending(self, jobs: int) -> None:
        """Wait until at least `jobs` jobs wait (a hook for deterministic tests)."""
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.pending_jobs >= jobs)

    # --- closing --------------------------------------------------------------
    async def aclose(self) -> None:
        """Stop: waiting jobs are cancelled; running batches are cancelled."""
        self._closed = True
        tasks = [*self._drainers.values(), *self._running]
        for task in tasks:
            task.cancel()
        for jobs in self._pending.values():
            for job in jobs:
                job.future.cancel()
        self._pending.clear()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- internals ---------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    def _forget(self, key: K, job: Job[P, R]) -> None:
        jobs = self._pending.get(key)
        if jobs is not None and job in jobs:
            jobs.remove(job)
            if not jobs:
                del self._pending[key]

    def _size(self, key: K) -> int:
        return sum(job.size for job in self._pending.get(key, ()))

    async def _drain(self, key: K) -> None:
        """Run batches for `key` until nothing of it waits."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                # Collect: until the oldest waiting job's window ends, or a batch is full.
                while self._pending.get(key) and self._size(key) < self.max_batch:
                    delay = self._pending[key][0].arrived + self.window_s - loop.time()
                    if delay <= 0:
                        break
                    wake = self._wake[key]
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await wake.wait()
                if not self._pending.get(key):
                    return
                if self.limiter is not None:
                    await self.limiter.acquire()  # more jobs may join while we wait
                batch = self._take(key)
                if not batch:
                    if self.limiter is not None:
                        self.limiter.release()
                    continue
                task = asyncio.create_task(self._run_batch(key, batch), name=f"run-{key!r}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        finally:
            self._drainers.pop(key, None)
            self._wake.pop(key, None)

    def _take(self, key: K) -> list[Job[P, R]]:
        """The oldest jobs that fit in one call (the oldest one always does)."""
        batch: list[Job[P, R]] = []
        rest: list[Job[P, R]] = []
        images = 0
        for job in self._pending.pop(key, []):
            if job.future.done():
                continue  # its submitter left
            if not batch or images + job.size <= self.max_batch:
                batch.append(job)
                images += job.size
            else:
                rest.append(job)
        if rest:
            self._pending[key] = rest
        return batch

    async def _run_batch(self, key: K, batch: list[Job[P, R]]) -> None:
        try:
            try:
                results = await self._run(key, batch)
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"batch run returned {len(results)} results for {len(batch)} jobs"
                    )
            except asyncio.CancelledError:
                for job in batch:
                    job.future.cancel()
                raise
            except Exception as exc:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                for job, result in zip(batch, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
        finally:
            if self.limiter is not None:
                self.limiter.release()
