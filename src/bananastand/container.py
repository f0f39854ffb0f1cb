"""Builds every service once from the settings, and starts and stops them.

The web app, the worker, the CLI and the tests all get their services from here.
What starts depends on the role and the mode:

| role   | embedded (SQLite)                         | scale-out (PostgreSQL + Redis)        |
|--------|-------------------------------------------|---------------------------------------|
| serve  | API + in-process runner, recovery, sweeper | API only: dispatches to workers       |
| worker | (not used)                                | runs jobs; janitor                    |
| cli    | database only                             | database only                         |
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bananastand.accounts import Accounts, CreatedKey
from bananastand.admin import Administration
from bananastand.billing import Billing
from bananastand.catalog import Catalog, ModelSpec, load_entries
from bananastand.config import Settings
from bananastand.console_auth import ConsoleAuth
from bananastand.core import Core
from bananastand.db import Database
from bananastand.errors import Conflict, StorageUnavailable
from bananastand.generations import Generations
from bananastand.jobs import Dispatcher, Execute
from bananastand.payments import Payments
from bananastand.pipeline import DurationStats, GenerationService
from bananastand.progress import ProgressBus
from bananastand.progress_redis import RedisProgressBus
from bananastand.providers import Provider, build_providers
from bananastand.redis_slots import RedisSlots
from bananastand.references import FetchPolicy, ReferenceFetcher
from bananastand.storage import UrlSigner, open_storage, read_own_image
from bananastand.thumbnail_store import ThumbnailStore
from bananastand.webhooks import Webhooks

if TYPE_CHECKING:
    from bananastand.janitor import Janitor
    from bananastand.queue import QueueDispatcher

log = logging.getLogger(__name__)

DEMO_EMAIL = "demo@bananastand.local"


def redis_client(settings: Settings) -> Redis:
    """The Redis client of a scale-out process. A socket may stay quiet as long as
    the longest blocking read (`XREAD` waits up to a keep-alive interval) plus a
    margin; commands that meet a dropped connection (a Redis restart) are retried
    with backoff on a fresh one; idle pooled connections are checked before use."""
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=5.0,
        socket_timeout=settings.stream_keepalive_seconds + 10.0,
        socket_keepalive=True,
        health_check_interval=10,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=4),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


@dataclass
class Services:
    settings: Settings
    db: Database
    accounts: Accounts
    billing: Billing
    catalog: Catalog
    entries: list[ModelSpec]
    providers: dict[str, Provider]
    unusable: dict[str, str]
    generation: GenerationService
    console_auth: ConsoleAuth
    admin: Administration
    webhooks: Webhooks
    payments: Payments
    thumbnails: ThumbnailStore
    redis: Redis | None = None
    # Scale-out: the task queue (also `generation.dispatcher`), which the
    # `worker` command runs and the janitor watches; None when embedded.
    queue: QueueDispatcher | None = None
    janitor: Janitor | None = None
    demo_key: CreatedKey | None = None
    # The admin setup code, while no admin exists (printed by `serve`, never logged).
    pending_setup_code: str | None = None
    role: str = "cli"
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.check_production()
        core = Core.build(settings)
        db = core.db
        entries = load_entries(settings.catalog_path)
        providers, unusable = build_providers(settings, entries)
        catalog = _offered(entries, providers, unusable)
        durations = DurationStats(settings.default_duration_seconds)
        generations = Generations(db, estimate=durations.estimate)
        signer = UrlSigner(core.secret, settings.base_url)
        storage = open_storage(settings)
        fetcher = ReferenceFetcher(
            FetchPolicy(
                max_bytes=settings.reference_max_bytes,
                max_pixels=settings.reference_max_pixels,
                timeout_seconds=settings.reference_timeout_seconds,
                max_redirects=settings.reference_max_redirects,
                allowed_networks=tuple(settings.reference_allowed_networks),
            ),
            own_images=functools.partial(read_own_image, signer, storage),
        )
        redis: Redis | None = None
        slots: RedisSlots | None = None
        bus: ProgressBus | RedisProgressBus = ProgressBus()
        dispatcher: Callable[[Execute], Dispatcher] | None = None
        if settings.scale_out:
            from bananastand.queue import QueueDispatcher

            redis = redis_client(settings)
            slots = RedisSlots(
                redis, prefix=settings.redis_prefix, lease_seconds=settings.slot_lease_seconds
            )
            bus = RedisProgressBus(redis, prefix=settings.redis_prefix)

            def dispatcher(execute: Execute) -> Dispatcher:
                return QueueDispatcher(settings, execute)

        webhooks = Webhooks(
            db,
            generations=generations,
            signer=signer,
            allowed_networks=settings.reference_allowed_networks,
            timeout_seconds=settings.webhook_timeout_seconds,
            backoff_seconds=settings.webhook_backoff_seconds,
            max_backoff_seconds=settings.webhook_max_backoff_seconds,
            max_age_seconds=settings.webhook_max_age_seconds,
            poll_seconds=settings.webhook_poll_seconds,
            concurrency=settings.webhook_concurrency,
            concurrency_per_url=settings.webhook_concurrency_per_url,
        )
        service = GenerationService(
            settings=settings,
            catalog=catalog,
            providers=providers,
            generations=generations,
            fetcher=fetcher,
            storage=storage,
            signer=signer,
            bus=bus,
            durations=durations,
            slots=slots,
            dispatcher=dispatcher,
            webhooks=webhooks,
        )
        queue = service.dispatcher if settings.scale_out else None
        if queue is not None:
            assert isinstance(queue, QueueDispatcher)
            queue.follow(service.follow)
        return cls(
            settings=settings,
            db=db,
            accounts=core.accounts,
            billing=core.billing,
            console_auth=core.console_auth,
            admin=core.admin,
            webhooks=webhooks,
            payments=Payments(db, core.billing, settings),
            thumbnails=ThumbnailStore(service.storage),
            catalog=catalog,
            entries=entries,
            providers=providers,
            unusable=unusable,
            generation=service,
            redis=redis,
            queue=queue,
        )

    async def start(self, role: str = "serve") -> None:
        """Start what `role` ("serve", "worker" or "cli") needs; see the module table."""
        self.role = role
        await self.db.migrate()
        if role == "cli":
            return
        if role == "worker" and not self.settings.scale_out:
            raise ValueError(
                "`bananastand worker` is for scale-out: set BANANASTAND_REDIS_URL and a "
                "PostgreSQL BANANASTAND_DATABASE_URL (the embedded server runs its own jobs)"
            )
        if self.settings.scale_out and not self.settings.public_base_url:
            log.warning(
                "scale-out without BANANASTAND_PUBLIC_BASE_URL: each process builds image URLs "
                "from its own address; set it to the load balancer's address"
            )
        elif not self.settings.public_base_url and self.settings.host in ("0.0.0.0", "::"):  # noqa: S104
            log.warning(
                "image URLs will point at %s; set BANANASTAND_PUBLIC_BASE_URL to the address "
                "clients reach this server at",
                self.settings.base_url,
            )
        runs_generations = role == "worker" or not self.settings.scale_out
        if runs_generations:
            for provider in self.providers.values():
                await provider.start()
        # Loading can fail (missing weights): offer what actually started.
        self.catalog = _offered(self.entries, self.providers, self.unusable)
        self.generation.catalog = self.catalog
        for model in self.catalog:
            log.info("model %s: live on %s (%s)", model.name, model.backend, model.backend_model)
        for name, reason in self.catalog.unavailable.items():
            log.info("model %s: not offered: %s", name, reason)
        if role == "serve" and self.settings.demo_account and await self.accounts.count() == 0:
            with contextlib.suppress(Conflict):  # another API process was first
                self.demo_key = await self.create_demo_account()
        signup = role == "serve" and self.settings.console_signup
        if signup and await self.console_auth.needs_admin():
            self.pending_setup_code = self.console_auth.setup_code
        await self.generation.dispatcher.start()
        # Every process that settles generations also delivers their webhooks.
        self._background.append(asyncio.create_task(self.webhooks.run_forever(), name="webhooks"))
        if not self.settings.scale_out:
            resumed, failed = await self.generation.recover()
            if resumed or failed:
                log.info("recovered unfinished generations: %d resumed, %d failed", resumed, failed)
            self._background.append(asyncio.create_task(self._sweep_forever(), name="sweeper"))
        elif role == "worker":
            from bananastand.janitor import Janitor

            assert self.generation.slots is not None and self.queue is not None
            self.janitor = Janitor(self.generation, self.queue, self.generation.slots)
            self._background.append(asyncio.create_task(self.janitor.run_forever(), name="janitor"))

    async def check_dependencies(self) -> dict[str, str]:
        """Each dependency as "up" or "down" (readiness)."""
        checks: dict[str, str] = {}
        try:
            await self.db.ping()
            checks["database"] = "up"
        except Exception:
            checks["database"] = "down"
        if self.redis is not None:
            try:
                await self.redis.ping()
                checks["redis"] = "up"
            except Exception:
                checks["redis"] = "down"
            try:
                await self.generation.generations.queue_depth(jobs=True)
                checks["queue"] = "up"
            except Exception:
                checks["queue"] = "down"
        return checks

    async def create_demo_account(self) -> CreatedKey:
        account = await self.accounts.create(email=DEMO_EMAIL, display_name="Demo", api_access=True)
        await self.billing.grant(
            account.id, self.settings.demo_credits, reason="demo account credits"
        )
        return await self.accounts.create_key(account.id, name="demo")

    async def _sweep_forever(self) -> None:
        while True:
            try:
                deleted = await self.generation.sweep_expired()
                if deleted:
                    log.info("deleted %d expired images", deleted)
                overdue = await self.generation.expire_overdue()
                if overdue:
                    log.info("ended %d generations unfinished past their age limit", overdue)
            except StorageUnavailable:
                pass  # the store logged its outage; the next round tries again
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(self.settings.sweep_interval_seconds)

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.role != "cli":
            await self.generation.dispatcher.stop(
                grace_seconds=self.settings.shutdown_grace_seconds
            )
        await self.generation.fetcher.aclose()
        await self.generation.storage.aclose()
        await self.webhooks.aclose()
        await self.payments.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.close()


def _offered(
    entries: list[ModelSpec], providers: dict[str, Provider], unusable: dict[str, str]
) -> Catalog:
    def reason(model: ModelSpec) -> str | None:
        provider = providers.get(model.backend)
        if provider is None:
            return unusable.get(model.backend, "backend not usable")
        return provider.unavailable(model.backend_model)

    return Catalog.resolve(entries, reason)
