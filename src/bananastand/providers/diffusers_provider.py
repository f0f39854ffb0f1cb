"""A local diffusion backend: Stable Diffusion-family pipelines run by diffusers.

Weights are loaded once at start and kept warm. Each catalogue `backendModel`
is a local pipeline folder (`save_pretrained` layout) or a Hugging Face hub id,
read from the local hub cache unless `diffusers_allow_download` is on. A model
that cannot be found or loaded is reported through `unavailable()` with the
reason, and is then not offered; `start()` never raises.

Generation:
- Output size: the requested aspect ratio (image-to-image without one: the
  first reference's shape; otherwise square) at the area of a
  `baseSize` x `baseSize` square (option, default 512), each side rounded to a
  multiple of 8: at 512, 1:1 is 512x512, 16:9 is 680x384, 3:4 is 440x592.
- Text-to-image runs `steps` steps (default 1) at `guidanceScale` (default 0);
  image-to-image (any reference: the first one, cropped to the output shape)
  runs `imageToImageSteps` (default 2) at `strength` (default 0.5), of which
  diffusers runs `int(steps * strength)` (raised to at least 1). These are
  SD-Turbo's recipes.
- Image `i` of a request uses its own CPU `torch.Generator` seeded `seed + i`,
  so an image does not depend on what it was batched with (its noise is the
  same; kernels may round differently for another batch size, by 1/255 at most
  in the tests).
- Requests that can share a call (same model, size, steps, guidance, strength,
  mode) are batched (`batching.Batcher`): they collect for
  `diffusers_batch_window_ms`, or until `diffusers_max_batch` images wait, and
  run as one pipeline call. A request with more images than `diffusers_max_batch`
  is split into several.
- At most `diffusers_device_concurrency` calls run on the device at once (a
  semaphore); each runs in a worker thread under `torch.inference_mode()`.
  With more than one, each concurrent call gets its own pipeline views (own
  scheduler state, shared weights): diffusers pipelines keep per-call state.
- Progress is real: `callback_on_step_end` reports each denoising step from the
  worker thread to the event loop, where it reaches every request in the call
  ("Denoising step 3 of 20").
- Previews (stream mode, `request.previews`): every `every_steps` steps but the
  last, the step's latents of the request's first image are turned into an
  approximate RGB picture at latent resolution (a linear map of Stable
  Diffusion's four latent channels, no VAE decode: about free), in the worker
  thread, and sent along with that step's progress.

`provider.stats` counts pipeline calls, images and requests per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image
from PIL import Image

from bananastand.aspect_ratios import ratio_value, size_for_area
from bananastand.config import Settings
from bananastand.providers import Unusable
from bananastand.providers.base import (
    SAFETY_MESSAGE,
    BaseProvider,
    GeneratedImage,
    ImageRequest,
    Progress,
    ProviderError,
    ProviderResult,
)
from bananastand.providers.batching import Batcher, BatcherClosed, Job
from bananastand.providers.diffusers_options import (
    IMAGE_TO_IMAGE,
    TEXT_TO_IMAGE,
    Recipe,
    encode_png,
    fit_reference,
    locate,
)

log = logging.getLogger(__name__)


def _failure_kind(exc: BaseException) -> str:
    """What went wrong, in a few words safe to show clients (no paths, no internals)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "out of device memory"
    return type(exc).__name__


def resolve_device(setting: str) -> torch.device:
    """`auto`: CUDA, then MPS, then CPU. Raises Unusable for a device not usable here."""
    name = setting.strip().lower()
    if name in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise Unusable(f"diffusers_device {setting!r} is not a torch device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Unusable(f"diffusers_device is {setting!r} but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise Unusable(f"diffusers_device {setting!r}: no such CUDA device")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise Unusable(f"diffusers_device is {setting!r} but MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise Unusable(f"diffusers_device {setting!r} is not supported (cpu, cuda or mps)")
    return device


@dataclass
class Lane:
    """Pipelines for one call at a time: text-to-image and image-to-image views that
    share weights (and a scheduler, so never two calls on one lane)."""

    text2image: Any
    image2image: Any | None


@dataclass
class LoadedModel:
    model_id: str
    lanes: asyncio.Queue[Lane]
    primary: Lane
    seconds: float

    @property
    def text2image(self) -> Any:
        return self.primary.text2image

    @property
    def image2image(self) -> Any | None:
        return self.primary.image2image


# --- batching payloads and stats ----------------------------------------------------
@dataclass(frozen=True)
class BatchKey:
    """What requests must share to share a pipeline call."""

    model: str
    image_to_image: bool
    width: int
    height: int
    steps: int
    guidance_scale: float
    strength: float  # 0.0 for text-to-image


@dataclass
class Work:
    """One request's (or one chunk of one request's) images in a call."""

    prompt: str
    seeds: list[int]
    init_image: Image.Image | None
    report: Callable[[int, int, Image.Image | None], Awaitable[None]]
    preview_every: int = 0  # steps between previews; 0: none

    def wants_preview(self, step: int, steps: int) -> bool:
        return bool(self.preview_every) and step < steps and step % self.preview_every == 0


@dataclass(frozen=True)
class Output:
    data: bytes
    flagged: bool  # the pipeline's own safety checker blanked it


@dataclass(frozen=True)
class CallRecord:
    mode: str  # TEXT_TO_IMAGE or IMAGE_TO_IMAGE
    requests: int
    images: int
    ok: bool


@dataclass
class DiffusersStats:
    """What the pipeline calls did: read by the tests and `bench/bench_diffusers.py`."""

    pipeline_calls: int = 0
    failed_calls: int = 0
    images: int = 0
    calls_by_mode: Counter[str] = field(default_factory=Counter)
    images_per_call: Counter[int] = field(default_factory=Counter)  # images -> calls
    requests_per_call: Counter[int] = field(default_factory=Counter)  # requests -> calls

    def record(self, call: CallRecord) -> None:
        self.pipeline_calls += 1
        self.calls_by_mode[call.mode] += 1
        self.images_per_call[call.images] += 1
        self.requests_per_call[call.requests] += 1
        if call.ok:
            self.images += call.images
        else:
            self.failed_calls += 1


# (step, steps, previews: one per job of the call, or None when this step has none)
StepReport = tuple[int, int, list[Image.Image | None] | None]


class _Abandoned(Exception):
    """Raised inside the denoising loop when nobody wants the call's result any more."""


class _RequestProgress:
    """Folds the per-step reports of a request's chunks into one fraction."""

    def __init__(self, progress: Progress, sizes: list[int]) -> None:
        self._progress = progress
        self._sizes = sizes
        self._done = [0.0] * len(sizes)
        self._total = sum(sizes)

    def reporter(self, index: int) -> Callable[[int, int, Image.Image | None], Awaitable[None]]:
        async def report(step: int, steps: int, preview: Image.Image | None) -> None:
            self._done[index] = max(self._done[index], step / max(1, steps))
            fraction = sum(d * n for d, n in zip(self._done, self._sizes, strict=True))
            message = f"Denoising step {step} of {steps}"
            if len(self._sizes) > 1:
                message += f" (batch {index + 1} of {len(self._sizes)})"
            if preview is None:
                await self._progress(fraction / self._total, message)
            else:
                await self._progress(fraction / self._total, message, preview=preview)

        return report


# Stable Diffusion's four latent channels -> approximate RGB in -1..1 (a linear fit,
# the one ComfyUI's latent previews use for SD 1.x/2.x).
_LATENT_RGB = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)


def latent_preview(latent: torch.Tensor) -> Image.Image:
    """An approximate picture of one image's latents `(channels, h, w)`, at latent
    resolution. Other channel counts than four: the first channels, stretched."""
    x = latent.detach().to("cpu", torch.float32)
    x = x / max(1.0, float(x.std()))  # early steps: mostly noise, at a larger scale
    if x.shape[0] == 4:
        rgb = (torch.einsum("chw,cr->hwr", x, _LATENT_RGB) + 1) / 2
    else:
        planes = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
        low = planes.amin(dim=(1, 2), keepdim=True)
        high = planes.amax(dim=(1, 2), keepdim=True)
        rgb = ((planes - low) / (high - low).clamp_min(1e-6)).permute(1, 2, 0)
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).contiguous().numpy()
    return Image.fromarray(pixels, "RGB")


def _previews(
    jobs: Sequence[Job[Work, list[Output]]], step: int, steps: int, latents: Any
) -> list[Image.Image | None] | None:
    """Worker thread: the previews this step owes, one per job (its first image)."""
    wanted = [not job.cancelled and job.payload.wants_preview(step, steps) for job in jobs]
    if not any(wanted) or not isinstance(latents, torch.Tensor):
        return None
    previews: list[Image.Image | None] = []
    offset = 0
    for job, wants in zip(jobs, wanted, strict=True):
        preview = None
        if wants:
            try:
                preview = latent_preview(latents[offset])
            except Exception:  # a preview is a nicety: never fail the call for one
                log.debug("diffusers: a preview failed", exc_info=True)
        previews.append(preview)
        offset += job.size
    return previews


def _call_pipeline(
    pipe: Any, kwargs: dict[str, Any], on_step: Callable[..., dict[str, Any]]
) -> list[Output]:
    """Runs in a worker thread: one pipeline call, its images encoded as PNG."""
    with torch.inference_mode():
        result = pipe(
            **kwargs,
            output_type="pil",
            callback_on_step_end=on_step,
            callback_on_step_end_tensor_inputs=["latents"],
        )
    images = list(result.images)
    flags = getattr(result, "nsfw_content_detected", None) or [False] * len(images)
    return [
        Output(encode_png(image), bool(flag)) for image, flag in zip(images, flags, strict=True)
    ]


# --- the provider ---------------------------------------------------------------------
class DiffusersProvider(BaseProvider):
    name = "diffusers"

    def __init__(
        self,
        *,
        model_ids: Sequence[str],
        device: torch.device,
        dtype: torch.dtype,
        allow_download: bool = False,
        batch_window_ms: float = 15.0,
        max_batch: int = 4,
        device_concurrency: int = 1,
    ) -> None:
        self.model_ids = list(dict.fromkeys(model_ids))
        self.device = device
        self.dtype = dtype
        self.allow_download = allow_download
        self.max_batch = max(1, max_batch)
        self.device_concurrency = max(1, device_concurrency)
        self.stats = DiffusersStats()
        self.loaded: dict[str, LoadedModel] = {}
        self._failed: dict[str, str] = {}
        self._started = False
        self._closing = False
        # The provider drives one device: this semaphore bounds the pipeline calls on it.
        self.device_slots = asyncio.Semaphore(self.device_concurrency)
        self.batcher: Batcher[BatchKey, Work, list[Output]] = Batcher(
            self._run_batch,
            window_s=max(0.0, batch_window_ms) / 1000,
            max_batch=self.max_batch,
            limiter=self.device_slots,
        )

    # --- availability and loading -------------------------------------------------
    def unavailable(self, backend_model: str) -> str | None:
        if backend_model in self._failed:
            return self._failed[backend_model]
        if self._started:
            return None if backend_model in self.loaded else "not loaded at start"
        return locate(backend_model, allow_download=self.allow_download)

    async def start(self) -> None:
        """Load every model once; a model that fails is reported, never raised."""
        if self._started:
            return
        for model_id in self.model_ids:
            reason = locate(model_id, allow_download=self.allow_download)
            if reason is not None:
                self._failed[model_id] = reason
                log.warning("diffusers: %s not loaded: %s", model_id, reason)
                continue
            started = time.monotonic()
            try:
                primary, lanes = await asyncio.to_thread(self._load, model_id)
            except Exception as exc:
                reason = f"weights failed to load ({_failure_kind(exc)})"
                self._failed[model_id] = reason
                log.warning("diffusers: %s not loaded: %s", model_id, reason, exc_info=exc)
                continue
            seconds = time.monotonic() - started
            queue: asyncio.Queue[Lane] = asyncio.Queue()
            for lane in lanes:
                queue.put_nowait(lane)
            self.loaded[model_id] = LoadedModel(model_id, queue, primary, seconds)
            log.info(
                "diffusers: loaded %s on %s (%s) in %.1f s%s",
                model_id,
                self.device,
                str(self.dtype).removeprefix("torch."),
                seconds,
                "" if primary.image2image else "; no image-to-image pipeline",
            )
        self._started = True

    def _load(self, model_id: str) -> tuple[Lane, list[Lane]]:
        """Runs in a worker thread."""
        path = Path(model_id).expanduser()
        source = str(path) if path.is_dir() else model_id
        pipe = AutoPipelineForText2Image.from_pretrained(
            source, dtype=self.dtype, local_files_only=not self.allow_download
        )
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        try:
            image2image = AutoPipelineForImage2Image.from_pipe(pipe)
            image2image.set_progress_bar_config(disable=True)
        except Exception as exc:  # some pipelines have no image-to-image sibling
            log.info("diffusers: %s has no image-to-image pipeline (%s)", model_id, exc)
            image2image = None
        primary = Lane(pipe, image2image)
        lanes = [primary]
        for _ in range(1, self.device_concurrency):
            scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
            text2image = type(pipe).from_pipe(pipe, scheduler=scheduler)
            text2image.set_progress_bar_config(disable=True)
            view = None
            if image2image is not None:
                view = type(image2image).from_pipe(image2image, scheduler=scheduler)
                view.set_progress_bar_config(disable=True)
            lanes.append(Lane(text2image, view))
        return primary, lanes

    # --- generating ----------------------------------------------------------------
    async def generate(self, request: ImageRequest, progress: Progress) -> ProviderResult:
        loaded = self.loaded.get(request.backend_model)
        if loaded is None:
            why = self.unavailable(request.backend_model) or "not loaded"
            raise ProviderError(f"The local model is not available ({why})")
        try:
            recipe = Recipe.from_options(request.options)
            aspect = self._aspect(request)
        except ValueError as exc:
            raise ProviderError(f"The local model is misconfigured: {exc}") from None
        width, height = size_for_area(aspect, recipe.base_size, multiple=8)
        image_to_image = bool(request.references)
        init_image: Image.Image | None = None
        if image_to_image:
            if loaded.image2image is None:
                raise ProviderError("This local model does not support reference images")
            try:
                init_image = await asyncio.to_thread(
                    fit_reference, request.references[0], width, height
                )
            except Exception as exc:
                raise ProviderError("The reference image could not be read") from exc
            key = BatchKey(
                request.backend_model,
                True,
                width,
                height,
                recipe.image_to_image_steps_effective,
                recipe.guidance_scale,
                recipe.strength,
            )
        else:
            key = BatchKey(
                request.backend_model,
                False,
                width,
                height,
                recipe.steps,
                recipe.guidance_scale,
                0.0,
            )

        quantity = max(1, request.quantity)
        chunks = [
            (start, min(self.max_batch, quantity - start))
            for start in range(0, quantity, self.max_batch)
        ]
        tracker = _RequestProgress(progress, [n for _, n in chunks])
        await progress(0.0, "Waiting for the local model")
        tasks = [
            asyncio.ensure_future(
                self.batcher.submit(
                    key,
                    Work(
                        prompt=request.prompt,
                        seeds=[request.seed + start + i for i in range(n)],
                        init_image=init_image,
                        report=tracker.reporter(index),
                        preview_every=request.previews.every_steps if request.previews else 0,
                    ),
                    size=n,
                )
            )
            for index, (start, n) in enumerate(chunks)
        ]
        try:
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return collect_results(chunks, outcomes)

    @staticmethod
    def _aspect(request: ImageRequest) -> float:
        if request.aspect_ratio:
            return ratio_value(request.aspect_ratio)
        if request.references:
            first = request.references[0]
            return first.width / max(1, first.height)
        return 1.0

    async def _run_batch(
        self, key: BatchKey, jobs: Sequence[Job[Work, list[Output]]]
    ) -> list[list[Output]]:
        """One pipeline call for a batch (the batcher holds a device slot meanwhile)."""
        loaded = self.loaded.get(key.model)
        if loaded is None:
            raise ProviderError("The local model was unloaded")
        prompts: list[str] = []
        generators: list[torch.Generator] = []
        images: list[Image.Image] = []
        for job in jobs:
            for seed in job.payload.seeds:
                prompts.append(job.payload.prompt)
                generators.append(torch.Generator(device="cpu").manual_seed(seed))
                if job.payload.init_image is not None:
                    images.append(job.payload.init_image)
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "num_inference_steps": key.steps,
            "guidance_scale": key.guidance_scale,
            "generator": generators,
        }
        if key.image_to_image:
            kwargs.update(image=images, strength=key.strength)
        else:
            kwargs.update(height=key.height, width=key.width)

        loop = asyncio.get_running_loop()
        steps: asyncio.Queue[StepReport | None] = asyncio.Queue()

        def on_step(
            pipeline: Any, index: int, timestep: Any, callback_kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            # Worker thread. Stop early when no one waits for this call any more.
            if self._closing or all(job.cancelled for job in jobs):
                raise _Abandoned
            total = int(getattr(pipeline, "num_timesteps", 0) or key.steps)
            previews = _previews(jobs, index + 1, total, callback_kwargs.get("latents"))
            loop.call_soon_threadsafe(steps.put_nowait, (index + 1, total, previews))
            return callback_kwargs

        lane = await loaded.lanes.get()  # never waits: lanes >= calls on the device
        pump = asyncio.create_task(self._pump(steps, jobs))
        pipe = lane.image2image if key.image_to_image else lane.text2image
        mode = IMAGE_TO_IMAGE if key.image_to_image else TEXT_TO_IMAGE
        ok = False
        try:
            outputs = await asyncio.to_thread(_call_pipeline, pipe, kwargs, on_step)
            if len(outputs) != len(prompts):
                raise RuntimeError(f"{len(outputs)} images for {len(prompts)} prompts")
            ok = True
        except asyncio.CancelledError:
            pump.cancel()
            raise
        except _Abandoned:
            raise ProviderError("The generation was abandoned") from None
        except Exception as exc:
            log.error(
                "diffusers: %s call failed (%s, %d images)",
                key.model,
                mode,
                len(prompts),
                exc_info=exc,
            )
            raise ProviderError(f"The local model failed ({_failure_kind(exc)})") from None
        finally:
            loaded.lanes.put_nowait(lane)
            self.stats.record(CallRecord(mode, len(jobs), len(prompts), ok))
            steps.put_nowait(None)
            await asyncio.wait([pump])  # every step reported before any result
        results: list[list[Output]] = []
        offset = 0
        for job in jobs:
            results.append(outputs[offset : offset + job.size])
            offset += job.size
        return results

    @staticmethod
    async def _pump(
        steps: asyncio.Queue[StepReport | None], jobs: Sequence[Job[Work, list[Output]]]
    ) -> None:
        """Deliver step reports, in order, to every request still waiting."""
        while (item := await steps.get()) is not None:
            step, total, previews = item
            for index, job in enumerate(jobs):
                if job.cancelled:
                    continue
                try:
                    await job.payload.report(step, total, previews[index] if previews else None)
                except Exception:
                    log.debug("diffusers: a progress report failed", exc_info=True)

    async def aclose(self) -> None:
        self._closing = True
        await self.batcher.aclose()
        self.loaded.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def collect_results(
    chunks: list[tuple[int, int]], outcomes: Sequence[list[Output] | BaseException]
) -> ProviderResult:
    images: list[GeneratedImage] = []
    errors: list[str] = []
    first_error: str | None = None
    flagged = 0
    for (start, n), outcome in zip(chunks, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if isinstance(outcome, ProviderError):
                message = str(outcome)
            elif isinstance(outcome, asyncio.CancelledError | BatcherClosed):
                message = "The local model is shutting down"
            else:
                log.error("diffusers: unexpected error", exc_info=outcome)
                message = "The local model failed"
            first_error = first_error or message
            span = f"image {start + 1}" if n == 1 else f"images {start + 1}-{start + n}"
            errors.append(f"{span}: {message}")
            continue
        for output in outcome:
            if output.flagged:
                flagged += 1
            else:
                images.append(GeneratedImage(data=output.data, mime_type="image/png"))
    if not images:
        if flagged and first_error is None:
            return ProviderResult(images=[], safety_message=SAFETY_MESSAGE)
        raise ProviderError(first_error or "The local model made no image")
    if flagged:
        errors.append(f"{flagged} image(s) withheld by the model's safety checker")
    return ProviderResult(images=images, errors=errors)


def build(settings: Settings, model_ids: list[str]) -> DiffusersProvider:
    device = resolve_device(settings.diffusers_device)
    dtype = torch.float16 if device.type in ("cuda", "mps") else torch.float32
    return DiffusersProvider(
        model_ids=model_ids,
        device=device,
        dtype=dtype,
        allow_download=settings.diffusers_allow_download,
        batch_window_ms=settings.diffusers_batch_window_ms,
        max_batch=settings.diffusers_max_batch,
        device_concurrency=settings.diffusers_device_concurrency,
    )
