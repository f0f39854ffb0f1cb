"""Generating images: validate and quote a request, admit it (charge, take a
slot), dispatch it, run it through a backend, store the images and settle.

`GenerationService.execute()` is the only code that runs a generation, and
every way out of it (success, backend error, timeout, cancellation, crash of
the process, found at the next start) ends in `Generations.settle()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from PIL import Image
from redis.exceptions import RedisError

from bananastand import metrics, previews
from bananastand.accounts import Caller
from bananastand.catalog import Catalog
from bananastand.config import Settings
from bananastand.contract_json import final_event
from bananastand.db.models import utcnow
from bananastand.errors import (
    ConcurrencyLimitExceeded,
    InvalidRequest,
    ServerBusy,
    StorageUnavailable,
)
from bananastand.generations import (
    TERMINAL,
    GenerationRecord,
    Generations,
    ImageFile,
    NewGeneration,
    Replay,
    Settled,
)
from bananastand.ids import new_id
from bananastand.jobs import Dispatcher, Runner
from bananastand.previews import without_preview
from bananastand.progress import FINAL_TYPES, FINISHED_IMAGE, Event, Numbered, ProgressBus
from bananastand.progress_redis import RedisProgressBus
from bananastand.providers import (
    GeneratedImage,
    ImageRequest,
    Previews,
    Provider,
    ProviderError,
    ReferenceImage,
)
from bananastand.redis_slots import RedisSlots
from bananastand.references import ReferenceFetcher
from bananastand.storage import (
    EXTENSIONS,
    Storage,
    UrlSigner,
    image_key,
    key_image_id,
    thumb_key,
)
from bananastand.validation import (
    GenerateParams,
    Prepared,
    check_idempotency_key,
    prepare,
    request_hash,
    summarise_reference,
)
from bananastand.webhooks import Webhooks

log = logging.getLogger(__name__)

INTERRUPTED = "Interrupted: the server stopped before this generation finished"
CANCELLED = "Cancelled by the client; refunded"
EXPIRED = "Expired: the generation did not finish in time; refunded"
ORPHAN_SWEEP_EVERY = 3600.0  # seconds between scans of the image folder for orphans
ORPHAN_MIN_AGE = 86400.0
REFERENCES_MIN_AGE = 3600.0
# The number of a final event built from the record after the progress channel
# failed: above any the channel gives (it keeps a few hundred events at most).
AFTER_ANY_CHANNEL_EVENT = 1_000_000_000
LOST = "Interrupted too many times (the processes running it stopped); refunded"
STORE_DOWN = "Image storage was unavailable; refunded"
_REF = ("json", "bin")  # the two objects of a stored reference image


@dataclass(frozen=True)
class Submission:
    record: GenerationRecord
    balance: int
    replayed: bool = False  # an Idempotency-Key repeat: nothing new was charged


class DurationStats:
    """Moving average of seconds per image, per model: feeds Retry-After."""

    def __init__(self, default_seconds: float) -> None:
        self.default = default_seconds
        self._per_image: dict[str, float] = {}

    def observe(self, model: str, images: int, seconds: float) -> None:
        per_image = seconds / max(1, images)
        old = self._per_image.get(model)
        self._per_image[model] = per_image if old is None else 0.8 * old + 0.2 * per_image

    def estimate(self, model: str, quantity: int) -> float:
        return self._per_image.get(model, self.default) * max(1, quantity)


class GenerationService:
    def __init__(
        self,
        *,
        settings: Settings,
        catalog: Catalog,
        providers: dict[str, Provider],
        generations: Generations,
        fetcher: ReferenceFetcher,
        storage: Storage,
        signer: UrlSigner,
        bus: ProgressBus | RedisProgressBus,
        durations: DurationStats,
        slots: RedisSlots | None = None,
        dispatcher: Callable[[Callable[[str], Awaitable[None]]], Dispatcher] | None = None,
        webhooks: Webhooks | None = None,
    ) -> None:
        self.webhooks = webhooks
        self.settings = settings
        self.catalog = catalog
        self.providers = providers
        self.generations = generations
        self.fetcher = fetcher
        self.storage = storage
        self.signer = signer
        self.bus = bus
        self.durations = durations
        self.slots = slots  # scale-out: slots and queue places live in Redis
        self.dispatcher: Dispatcher = (
            dispatcher(self.execute)
            if dispatcher is not None
            else Runner(self.execute, workers=settings.async_workers)
        )
        self._references: dict[str, tuple[ReferenceImage, ...]] = {}
        # Embedded only: stream generations whose client turned previews off (the run
        # happens in this process; in scale-out, followers leave the previews out).
        self._no_previews: set[str] = set()
        # Embedded: generations admitted as running, handed to `execute` without a
        # claim; sync generations' callers waiting for the settlement.
        self._started: dict[str, GenerationRecord] = {}
        self._endings: dict[str, asyncio.Future[tuple[GenerationRecord, int]]] = {}
        self._orphans_swept_at = time.monotonic()  # the first scan an hour after start

    # --- accepting ---------------------------------------------------------
    def prepare(self, params: GenerateParams, *, is_pro: bool) -> Prepared:
        return prepare(params, settings=self.settings, catalog=self.catalog, is_pro=is_pro)

    async def submit(
        self,
        caller: Caller,
        params: GenerateParams,
        *,
        idempotency_key: str | None = None,
        previews: bool = True,
        references_field: str = "referenceImageUrls",
    ) -> Submission:
        """Admit and dispatch a generation. With an Idempotency-Key already used for the
        same request in the last 24 h, answer with that generation instead.
        `previews=False`: the client wants no stream previews (none are made when
        the run happens in this process). `references_field`: how the caller's
        request names its reference images, for error messages."""
        prepared = self.prepare(params, is_pro=caller.account.is_pro)
        idempotency = None
        if idempotency_key is not None:
            idempotency = (check_idempotency_key(idempotency_key), request_hash(params))
            earlier = await self.generations.replayed(caller.account.id, *idempotency)
            if earlier is not None:
                return await self._replay(earlier.id)
        try:
            return await self._submit(
                caller, prepared, idempotency, previews=previews, references_field=references_field
            )
        except Replay as replay:  # a request with the same key won the race
            return await self._replay(replay.generation_id)

    async def _replay(self, generation_id: str) -> Submission:
        record, balance = await self.generations.get_with_balance(generation_id)
        return Submission(record, balance, replayed=True)

    async def outcome(self, generation_id: str) -> tuple[GenerationRecord, int]:
        """Wait for the generation to end: its final record and the balance after."""
        ending = self._endings.get(generation_id)
        if ending is not None:
            return await asyncio.shield(ending)
        await self.wait_settled(generation_id)
        return await self.generations.get_with_balance(generation_id)

    async def wait_settled(self, generation_id: str) -> None:
        """Until the generation has ended, wherever and whenever it was started."""
        await self.dispatcher.wait(generation_id)
        if not await self.generations.is_settled(generation_id):
            async for _event in self.follow(generation_id, idle_timeout=1.0):
                pass

    async def _submit(
        self,
        caller: Caller,
        prepared: Prepared,
        idempotency: tuple[str, str] | None,
        *,
        previews: bool = True,
        references_field: str = "referenceImageUrls",
    ) -> Submission:
        callback_url = None
        if prepared.callback_url is not None:
            if self.webhooks is None:
                raise InvalidRequest("callbackUrl: webhooks are not available on this server")
            callback_url = await self.webhooks.check_url(prepared.callback_url)
        references = (
            tuple(await self.fetcher.fetch_all(prepared.reference_urls, field=references_field))
            if prepared.reference_urls
            else ()
        )
        new = NewGeneration(
            id=new_id(),
            account_id=caller.account.id,
            api_key_id=caller.key_id,
            prompt=prepared.prompt,
            model=prepared.model.name,
            mode=prepared.mode,
            aspect_ratio=prepared.aspect_ratio,
            quantity=prepared.quantity,
            reference_urls=[summarise_reference(url) for url in prepared.reference_urls],
            seed=prepared.seed,
            callback_url=callback_url,
            unit_cost=prepared.model.unit_cost(len(references)),
            idempotency=idempotency,
        )
        # Written before admission when the run may happen elsewhere or later (a
        # worker process, a queued job resumed after a restart).
        keep_references = bool(references) and (new.mode == "async" or self.slots is not None)
        if keep_references:
            await self._save_references(new.id, references)
        # Embedded sync and stream generations run here at once: admitted as running.
        start_now = self.slots is None and new.mode != "async"
        try:
            await self._take_slot(caller, new)
            try:
                record, balance = await self.generations.admit(
                    new,
                    default_limit=self.settings.default_concurrency_limit,
                    queue_size=self.settings.async_queue_size if new.mode == "async" else None,
                    queue_workers=self.settings.async_workers,
                    # Embedded: the in-process queue knows how many wait (no count over
                    # the table at every admission); scale-out asks Redis instead.
                    waiting=self.dispatcher.waiting if isinstance(self.dispatcher, Runner) else 0,
                    db_queue=self.slots is None,
                    start_now=start_now,
                )
            except BaseException:
                if self.slots is not None:
                    await self.slots.release(new.account_id, new.id)
                raise
        except BaseException:
            if keep_references:
                await self._drop_references(new.id, len(references))
            raise
        metrics.CREDITS.labels("charged").inc(record.credits_charged)
        if references and self.slots is None:
            # Embedded: this process runs it and hands the images over in memory
            # (scale-out workers read the copies saved above).
            self._references[record.id] = references
        self.bus.open(record.id)
        if not previews and record.mode == "stream" and self.slots is None:
            self._no_previews.add(record.id)
        if start_now:
            self._started[record.id] = record
            if record.mode == "sync":
                self._endings[record.id] = asyncio.get_running_loop().create_future()
        await self.dispatcher.dispatch(record.id, record.mode)
        return Submission(record, balance)

    async def _take_slot(self, caller: Caller, new: NewGeneration) -> None:
        """Scale-out: take the account's slot (and a queue place) in Redis first.
        Without Redis nothing can be admitted safely: 503, nothing charged."""
        if self.slots is None:
            return
        try:
            await self._take_redis_slot(caller, new)
        except (OSError, RedisError):
            log.warning("Redis unavailable: generation %s refused", new.id)
            raise ServerBusy(
                "Server busy: its coordination service is unavailable; retry shortly",
                retry_after=5,
            ) from None

    async def _take_redis_slot(self, caller: Caller, new: NewGeneration) -> None:
        assert self.slots is not None
        limit = caller.account.concurrency_limit or self.settings.default_concurrency_limit
        granted, active = await self.slots.acquire(new.account_id, new.id, limit=limit)
        if not granted:
            raise ConcurrencyLimitExceeded(
                limit=limit,
                active=active,
                retry_after=await self.generations.estimate_slot_eta(new.account_id),
            )
        if new.mode == "async":
            granted, waiting = await self.slots.enqueue(
                new.id,
                capacity=self.settings.async_queue_size,
                lease_seconds=self.settings.generation_max_age_seconds,
            )
            if not granted:
                await self.slots.release(new.account_id, new.id)
                per_job = self.durations.estimate(new.model, new.quantity)
                workers = self.settings.worker_concurrency
                raise ServerBusy(retry_after=max(1, math.ceil(per_job * waiting / workers)))

    # --- following ---------------------------------------------------------------
    async def follow(
        self,
        generation_id: str,
        *,
        idle_timeout: float,
        after: int | None = None,
        previews: bool = True,
        finished_images: bool = False,
    ) -> AsyncIterator[Numbered | None]:
        """A generation's progress events, numbered `(seq, event)`, with the stream's
        guarantees: progress never goes down, and exactly one final event (`complete`
        or `error`) ends it. Yields None after each `idle_timeout` of silence
        (keep-alive time). The database has the last word: the final event is built
        from the record (also when the progress channel fails, e.g. Redis restarting).

        `after` resumes a dropped stream (the client's `Last-Event-ID`): only events
        numbered above it come, and nothing at all once the client had the final one.
        `previews=False` leaves previews (`data.previewImage`) out of status events.
        `finished_images=True` (the console's playground) also passes the events that
        report one image finished before the run ends, as `data.imageUrl` and
        `data.imageIndex`; without it (the API) those events are left out, so the
        API's stream is what the contract describes."""
        progress = 0
        last = after or 0  # the highest number this client has
        final_seq: int | None = None
        channel_failed = False
        try:
            async for item in self.bus.subscribe(generation_id, idle_timeout=idle_timeout):
                if item is None:
                    if await self.generations.is_settled(generation_id):
                        break
                    yield None
                    continue
                seq, event = item
                if event.get("type") in FINAL_TYPES:
                    final_seq = seq
                    if self.slots is None and (after is None or seq > after):
                        # Embedded: settled in this process, which built the event
                        # from the settled record; nothing to read again.
                        yield seq, event
                        return
                    break  # the final event is built here, from the record (below)
                # Earlier events count for the floor even when the client has them.
                progress = max(progress, int(event.get("progress", 0)))
                if seq <= last:
                    continue
                last = seq
                event = {**event, "progress": progress}
                finished = (event.get("data") or {}).get(FINISHED_IMAGE)
                if finished is not None:
                    if not finished_images:
                        continue
                    event = self._finished_image_event(event, finished)
                yield seq, (event if previews else without_preview(event))
        except (OSError, RedisError):
            log.warning("progress of %s unavailable; following the database", generation_id)
            channel_failed = True
        if final_seq is not None and after is not None and final_seq <= after:
            return  # a reconnect from a client that had the final event already
        while not await self.generations.is_settled(generation_id):
            yield None
            await asyncio.sleep(idle_timeout)
        # Built where the client is: image URLs come from this process's signer and
        # public base URL, whichever process ran the generation.
        record, balance = await self.generations.get_with_balance(generation_id)
        # Numbered as the channel numbered it. When the channel forgot the generation,
        # right after the last event this client has; when it failed, it may still
        # hold (and later resume with) higher numbers: then past any it can use.
        if final_seq is not None:
            seq = final_seq
        else:
            seq = AFTER_ANY_CHANNEL_EVENT if channel_failed else last + 1
        yield seq, final_event(record, balance, self.signer)

    def _finished_image_event(self, event: Event, finished: dict[str, Any]) -> Event:
        """A finished-image event with its image as a URL signed here."""
        url = self.signer.url(
            finished["id"], finished["extension"], datetime.fromisoformat(finished["expiresAt"])
        )
        return {**event, "data": {"imageUrl": url, "imageIndex": finished["index"]}}

    async def stream_delivered(self, generation_id: str, *, after: int) -> bool:
        """Whether a client whose last event is `after` has had the final event
        (known while the progress channel remembers the generation)."""
        if not await self.generations.is_settled(generation_id):
            return False
        try:
            final_seq = await self.bus.final_seq(generation_id)
        except (OSError, RedisError):
            return False
        return final_seq is not None and after >= final_seq

    # --- running -------------------------------------------------------------
    async def execute(self, generation_id: str) -> None:
        """Run one admitted generation to its settlement."""
        wants_previews = generation_id not in self._no_previews
        self._no_previews.discard(generation_id)
        if self.slots is not None:
            with contextlib.suppress(OSError, RedisError):  # the janitor tidies up later
                await self.slots.dequeue(generation_id)  # no longer waiting
        record = self._started.pop(generation_id, None)
        if record is None:  # queued (async, or run by a worker): claim it now
            attempt = await self.generations.claim(generation_id)
            if attempt is None:  # ended before it started (cancelled, failed)
                self._references.pop(generation_id, None)
                ended = await self.generations.get(generation_id)
                await self._drop_references(generation_id, len(ended.reference_urls))
                return
            record = await self.generations.get(generation_id)
        if record.attempts > self.settings.generation_max_attempts:
            await self._settle(record.id, images=[], error=LOST)
            await self._drop_references(record.id, len(record.reference_urls))
            return
        settled = False
        images: list[ImageFile] = []
        # Images a backend reported finished before returning: stored at once.
        early: dict[int, tuple[GeneratedImage, ImageFile]] = {}
        started = time.monotonic()
        try:
            await self._publish(record.id, "status", "Processing...", 5)
            model = self.catalog.get(record.model)
            provider = self.providers[model.backend]
            references = await self._load_references(record)
            asked = self._previews(record) if wants_previews else None

            async def progress(
                fraction: float,
                message: str,
                /,
                *,
                preview: Image.Image | None = None,
                image: GeneratedImage | None = None,
            ) -> None:
                fraction = min(max(fraction, 0.0), 1.0)
                event: Event = {
                    "type": "status",
                    "message": message,
                    "progress": 5 + int(fraction * 85),
                }
                if image is not None:
                    stored = await self._store(image.data)
                    early[id(image)] = (image, stored)
                    expires = utcnow() + timedelta(seconds=self.settings.image_ttl_seconds)
                    event["data"] = {
                        FINISHED_IMAGE: {
                            "id": stored.id,
                            "extension": stored.extension,
                            "expiresAt": expires.isoformat(),
                            "index": len(early) - 1,
                        }
                    }
                elif preview is not None and asked is not None:
                    url = await self._preview_url(record.id, preview)
                    if url is not None:
                        event["data"] = {"previewImage": url}
                await self._publish_event(record.id, event)

            request = ImageRequest(
                prompt=record.prompt,
                backend_model=model.backend_model,
                model=model.name,
                quantity=record.quantity,
                seed=record.seed,
                aspect_ratio=None if record.aspect_ratio == "default" else record.aspect_ratio,
                references=references,
                options=dict(model.options),
                deadline=time.monotonic() + model.timeout_seconds,
                previews=asked,
            )
            began = time.perf_counter()
            try:
                async with asyncio.timeout(model.timeout_seconds):
                    result = await provider.generate(request, progress)
            except TimeoutError:
                raise ProviderError(
                    f"Generation timed out after {model.timeout_seconds:g} seconds"
                ) from None
            metrics.PROVIDER_SECONDS.labels(model.backend, model.name).observe(
                time.perf_counter() - began
            )
            if result.images:
                await self._publish(record.id, "status", "Saving images...", 92)
            images = [
                early[id(image)][1] if id(image) in early else await self._store(image.data)
                for image in result.images
            ]
            error = "; ".join(result.errors) or None
            await self._settle(record.id, images=images, error=error, warning=result.safety_message)
            settled = True
            self.durations.observe(record.model, max(1, len(images)), time.monotonic() - started)
        except asyncio.CancelledError:
            if record.mode == "async" or self.dispatcher.hands_back_all_modes:
                # Stopping: hand the work back; the next start (or worker) resumes it.
                await self.generations.requeue(record.id, hand_back=True)
                if self.dispatcher.hands_back_all_modes:
                    await self.dispatcher.dispatch(record.id, record.mode)
                settled = True
            raise
        except ProviderError as exc:
            log.warning("generation %s failed: %s", record.id, exc)
            await self._settle(record.id, images=images, error=str(exc) or "Generation failed")
            settled = True
        except StorageUnavailable:
            # Logged once per outage by the store; failed and refunded like any
            # backend failure (images already stored are kept and charged).
            log.info("generation %s failed: image storage unavailable", record.id)
            await self._settle(record.id, images=images, error=STORE_DOWN)
            settled = True
        except Exception:
            log.exception("generation %s: internal error", record.id)
            await self._settle(record.id, images=images, error="Internal error while generating")
            settled = True
        finally:
            if not settled:
                await asyncio.shield(self._settle(record.id, images=images, error=INTERRUPTED))
            # Images shown while it ran that the settlement did not keep (it failed,
            # was cancelled or handed back): not the account's, so not served.
            kept = {image.id for image in images}
            dropped = [image_key(f.id, f.extension) for _, f in early.values() if f.id not in kept]
            if dropped:
                with contextlib.suppress(StorageUnavailable):
                    await asyncio.shield(self.storage.delete(*dropped))
            self._references.pop(record.id, None)
            if record.reference_urls and (await self.generations.get(record.id)).state in TERMINAL:
                await self._drop_references(record.id, len(record.reference_urls))

    def _previews(self, record: GenerationRecord) -> Previews | None:
        """What to ask of the backend: previews for someone watching a stream."""
        if record.mode != "stream" or not self.settings.stream_previews:
            return None
        return Previews(every_steps=self.settings.preview_every_steps)

    async def _preview_url(self, generation_id: str, image: Image.Image) -> str | None:
        """A backend's preview as a small data URL; a preview that fails is skipped."""
        try:
            return await asyncio.to_thread(
                previews.data_url,
                image,
                max_side=self.settings.preview_max_side,
                fmt=self.settings.preview_format,
            )
        except Exception:
            log.debug("generation %s: a preview could not be encoded", generation_id, exc_info=True)
            return None

    async def _settle(
        self,
        generation_id: str,
        *,
        images: list[ImageFile],
        error: str | None = None,
        warning: str | None = None,
    ) -> None:
        settled = await self.generations.settle(
            generation_id,
            images=images,
            error=error,
            warning=warning,
            image_ttl=timedelta(seconds=self.settings.image_ttl_seconds),
        )
        await self._after_settle(settled)

    async def _after_settle(self, settled: Settled) -> None:
        """Free the slot, count it, and tell followers: after every settlement."""
        generation_id = settled.generation.id
        if self.slots is not None:
            try:
                await self.slots.release(settled.generation.account_id, generation_id)
            except (OSError, RedisError):  # the lease expires by itself
                log.warning("could not release the slot of %s now", generation_id)
        if settled.changed:
            record = settled.generation
            metrics.GENERATIONS.labels(
                record.model,
                metrics.outcome(
                    record.state, len(record.images), record.quantity, bool(record.warning_message)
                ),
            ).inc()
            metrics.CREDITS.labels("refunded").inc(record.credits_charged - record.credits_used)
            await self._publish_event(
                generation_id, final_event(settled.generation, settled.balance, self.signer)
            )
            if record.callback_url and self.webhooks is not None:
                self.webhooks.wake()  # its message was written with the settlement
        ending = self._endings.pop(generation_id, None)
        if ending is not None and not ending.done():
            ending.set_result((settled.generation, settled.balance))

    async def _publish(self, generation_id: str, kind: str, message: str, progress: int) -> None:
        await self._publish_event(
            generation_id, {"type": kind, "message": message, "progress": progress}
        )

    async def _publish_event(self, generation_id: str, event: dict[str, Any]) -> None:
        """Progress is best-effort: followers fall back to the database."""
        try:
            await self.bus.publish(generation_id, event)
        except (OSError, RedisError):
            log.warning("progress of %s not published (channel unavailable)", generation_id)

    async def _store(self, data: bytes) -> ImageFile:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            mime = Image.MIME.get(image.format or "", "image/png")
        extension = EXTENSIONS.get(mime, "png")
        image_id = secrets.token_urlsafe(18)
        # No thumbnail here: making one costs far more CPU than the rest of a
        # request, so the console's first look makes it (`api.images`).
        await self.storage.put(image_key(image_id, extension), data)
        return ImageFile(image_id, extension, mime, width, height, len(data))

    # --- references kept for queued jobs ------------------------------------
    async def _save_references(self, generation_id: str, refs: tuple[ReferenceImage, ...]) -> None:
        for index, ref in enumerate(refs):
            meta = json.dumps({"mime": ref.mime_type, "w": ref.width, "h": ref.height}).encode()
            await self.storage.put(f"references/{generation_id}/{index}.json", meta)
            await self.storage.put(f"references/{generation_id}/{index}.bin", ref.data)

    async def _load_references(self, record: GenerationRecord) -> tuple[ReferenceImage, ...]:
        if record.id in self._references:
            return self._references[record.id]
        refs = []
        # Saved by the API process that admitted it (scale-out: maybe another machine).
        for index in range(len(record.reference_urls)):
            meta = await self.storage.get(f"references/{record.id}/{index}.json")
            data = await self.storage.get(f"references/{record.id}/{index}.bin")
            if meta is None or data is None:
                raise ProviderError("The reference images of this generation were lost")
            about = json.loads(meta)
            refs.append(ReferenceImage(data, about["mime"], about["w"], about["h"]))
        return tuple(refs)

    async def _drop_references(self, generation_id: str, count: int) -> None:
        """Best effort: what a store outage leaves behind, the orphan sweep deletes."""
        keys = [f"references/{generation_id}/{i}.{kind}" for i in range(count) for kind in _REF]
        with contextlib.suppress(StorageUnavailable):
            await self.storage.delete(*keys)

    # --- lifecycle -------------------------------------------------------------
    async def recover(self) -> tuple[int, int]:
        """At start: resume async generations a stopped process left behind; fail
        and refund the others (their callers are gone). Returns (resumed, failed)."""
        resumed = failed = 0
        for record in await self.generations.in_progress():
            if record.mode == "async":
                if record.state == "running":  # its attempt was spent: it counts
                    await self.generations.requeue(record.id)
                self.bus.open(record.id)
                await self.dispatcher.dispatch(record.id, record.mode)
                resumed += 1
            else:
                await self._settle(record.id, images=[], error=INTERRUPTED)
                failed += 1
        return resumed, failed

    async def cancel(self, generation_id: str, *, account_id: str) -> tuple[GenerationRecord, bool]:
        """Stop a waiting or running generation of the account: it ends failed and
        refunded at once (freeing its slot), then its work is stopped as soon as the
        backend allows. Returns (record, whether anything changed)."""
        record = await self.generations.get(generation_id, account_id=account_id)
        if record.state in TERMINAL:
            return record, False
        return await self._end(record, CANCELLED)

    async def expire_overdue(self) -> int:
        """End (failed, refunded) the generations still unfinished after
        `generation_max_age_seconds`: a run that cannot settle must not hold its
        account's slot for ever. Returns how many were ended."""
        limit = utcnow() - timedelta(seconds=self.settings.generation_max_age_seconds)
        ended = 0
        for record in await self.generations.in_progress():
            if record.created_at < limit:
                _, changed = await self._end(record, EXPIRED)
                ended += changed
        return ended

    async def _end(self, record: GenerationRecord, error: str) -> tuple[GenerationRecord, bool]:
        settled = await self.generations.settle(
            record.id,
            error=error,
            image_ttl=timedelta(seconds=self.settings.image_ttl_seconds),
        )
        await self._after_settle(settled)
        if settled.changed:
            self._started.pop(record.id, None)
            try:
                await self.dispatcher.cancel(record.id)
            except Exception:  # best effort: whatever it makes now is discarded anyway
                log.warning("could not stop the work of ended %s", record.id)
            # A run still waiting in the queue will never start (so never tidy up).
            self._references.pop(record.id, None)
            await self._drop_references(record.id, len(record.reference_urls))
        return settled.generation, settled.changed

    async def fail(self, generation_id: str, message: str) -> None:
        """End a generation as failed and refunded (whoever runs it is gone)."""
        await self._settle(generation_id, images=[], error=message)

    async def sweep_expired(self) -> int:
        """Delete the bytes of expired images (their URLs already answer 410) and,
        hourly, of orphans: images stored by a run that never settled (the process
        died in between), which no record will ever point at."""
        expired = await self.generations.expired_images()
        # One batched delete (an object store takes up to 1,000 keys a request).
        await self.storage.delete(
            *(key for i in expired for key in (image_key(i.id, i.extension), thumb_key(i.id)))
        )
        await self.generations.mark_deleted([image.id for image in expired])
        orphans = 0
        if time.monotonic() - self._orphans_swept_at > ORPHAN_SWEEP_EVERY:
            self._orphans_swept_at = time.monotonic()
            orphans = await self.sweep_orphans()
        return len(expired) + orphans

    async def sweep_orphans(self) -> int:
        """Delete files nothing will ever read: images no record points at (older
        than any run can last, so no run in progress loses its output) and the
        reference images of generations that have ended (however they ended)."""
        age = max(ORPHAN_MIN_AGE, 2 * self.settings.generation_max_age_seconds)
        stale = await self.storage.stale("images", older_than=age)
        known = await self.generations.known_images([key_image_id(key) for key in stale])
        orphans = [key for key in stale if key_image_id(key) not in known]
        # references/{generation id}/{n}.bin: kept exactly while the generation is
        # live (an hour's margin covers a submission saving them before its record).
        references = await self.storage.stale("references", older_than=REFERENCES_MIN_AGE)
        owners = {key: key.split("/")[1] for key in references if key.count("/") == 2}
        live = await self.generations.live(sorted(set(owners.values())))
        orphans += [key for key in references if owners.get(key) not in live]
        await self.storage.delete(*orphans)
        if orphans:
            log.info("deleted %d orphaned image files", len(orphans))
        return len(orphans)
