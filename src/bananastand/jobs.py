"""The in-process job runner.

Sync and stream generations start at once, as tasks detached from the request
that asked for them (a client that disconnects does not stop its generation).
Async generations wait in a FIFO served by a fixed number of worker tasks; the
queue's capacity is enforced at admission, in the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

Execute = Callable[[str], Awaitable[None]]


class Dispatcher(Protocol):
    """Where admitted generations go to run: `Runner` in-process (embedded), or
    `queue.QueueDispatcher` to worker processes (scale-out). Everything the
    generation pipeline asks of either; what only the task queue does (running a
    worker, following progress from other processes) is reached through
    `container.Services.queue`, typed as the queue itself."""

    hands_back_all_modes: bool

    async def start(self) -> None: ...
    async def stop(self, *, grace_seconds: float = 10.0) -> None: ...
    async def dispatch(self, generation_id: str, mode: str) -> None: ...
    async def wait(self, generation_id: str) -> None: ...
    async def cancel(self, generation_id: str) -> None: ...


class Runner:
    """The embedded dispatcher (see `queue.QueueDispatcher` for scale-out)."""

    hands_back_all_modes = False  # on shutdown only async work goes back to the queue

    def __init__(self, execute: Execute, *, workers: int) -> None:
        self._execute = execute
        self._workers = max(1, workers)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._done: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        self._worker_tasks = [
            asyncio.create_task(self._work(), name=f"async-worker-{i}")
            for i in range(self._workers)
        ]

    async def dispatch(self, generation_id: str, mode: str) -> None:
        if mode == "async":
            self.enqueue(generation_id)
        else:
            self.run_now(generation_id)

    def run_now(self, generation_id: str) -> None:
        self._track(generation_id)
        self._spawn(generation_id)

    async def cancel(self, generation_id: str) -> None:
        """Stop the generation's run if it is running here (it was settled already)."""
        for task in self._tasks:
            if task.get_name() == f"generation-{generation_id}":
                task.cancel()

    def _spawn(self, generation_id: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(generation_id), name=f"generation-{generation_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._ended(generation_id, done))
        return task

    def _ended(self, generation_id: str, task: asyncio.Task[None]) -> None:
        """Every run's end, also of a task cancelled before it ever started."""
        self._tasks.discard(task)
        future = self._done.pop(generation_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def enqueue(self, generation_id: str) -> None:
        self._track(generation_id)
        self._queue.put_nowait(generation_id)

    async def wait(self, generation_id: str) -> None:
        """Wait until the generation's run has ended (returns at once if unknown)."""
        future = self._done.get(generation_id)
        if future is not None:
            await asyncio.shield(future)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _track(self, generation_id: str) -> None:
        self._done.setdefault(generation_id, asyncio.get_running_loop().create_future())

    async def _run(self, generation_id: str) -> None:
        try:
            await self._execute(generation_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # the executor settles its own failures; this is a last resort
            log.exception("generation %s: unhandled error in the runner", generation_id)

    async def _work(self) -> None:
        while True:
            generation_id = await self._queue.get()
            # asyncio.wait does not cancel the job when this worker is cancelled:
            # stop() lets running jobs finish within the grace period.
            await asyncio.wait([self._spawn(generation_id)])
            self._queue.task_done()

    async def stop(self, *, grace_seconds: float = 10.0) -> None:
        """Stop taking queued work, let running generations finish within the
        grace period, then cancel what is left (the executor hands async work
        back to the queue for the next start)."""
        for worker in self._worker_tasks:
            worker.cancel()
        await asyncio.gather(*self._worker_tasks, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_seconds)
        leftover = list(self._tasks)
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
