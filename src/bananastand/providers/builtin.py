"""The built-in offline renderer as a backend: no keys, no GPU, no network.

Its latency, failure rate and a simulated safety filter are settings, so tests
and benchmarks can exercise slow, failing and blocked generations.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import anyio.from_thread
from PIL import Image

from bananastand import render
from bananastand.aspect_ratios import nearest_ratio
from bananastand.catalog import ModelSpec
from bananastand.config import Settings
from bananastand.providers import Progress, register
from bananastand.providers.base import (
    SAFETY_MESSAGE,
    BaseProvider,
    GeneratedImage,
    ImageRequest,
    ProviderError,
    ProviderResult,
)


@dataclass
class BuiltinProvider(BaseProvider):
    latency_seconds: float = 0.0
    failure_rate: float = 0.0
    steps: int = 4
    blocked_words: tuple[str, ...] = ()
    name: str = "builtin"

    async def generate(self, request: ImageRequest, progress: Progress) -> ProviderResult:
        prompt = request.prompt.lower()
        if any(word in prompt for word in self.blocked_words):
            return ProviderResult(images=[], safety_message=SAFETY_MESSAGE)
        width, height = render.size_for_ratio(_ratio(request))
        references = [ref.open() for ref in request.references]
        images: list[GeneratedImage] = []
        errors: list[str] = []
        total_ticks = request.quantity * self.steps
        for index in range(request.quantity):
            seed = request.seed + index
            message = f"Rendering image {index + 1} of {request.quantity}"
            on_step: render.StepCallback | None = None
            if self.latency_seconds:
                # Simulated time is spent here, on the event loop: a slow generation
                # holds no thread (as a slow upstream holds none); only the actual
                # rendering below needs one.
                for step in range(1, self.steps + 1):
                    await asyncio.sleep(self.latency_seconds / total_ticks)
                    await progress((index * self.steps + step) / total_ticks, message)
            else:

                def on_step(
                    step: int, steps: int, index: int = index, message: str = message
                ) -> None:
                    tick = index * self.steps + step
                    anyio.from_thread.run(_report, progress, tick / total_ticks, message)

            # abandon_on_cancel: a timeout or shutdown does not wait for the thread.
            data = await anyio.to_thread.run_sync(
                _render_png,
                request.prompt,
                seed,
                width,
                height,
                references,
                self.steps,
                on_step,
                abandon_on_cancel=True,
            )
            if random.Random(f"{seed}:{index}").random() < self.failure_rate:
                errors.append(f"image {index + 1}: simulated renderer failure")
                continue
            image = GeneratedImage(data=data, mime_type="image/png")
            images.append(image)
            if request.quantity > 1:  # each shows as soon as it is done
                done = f"Image {index + 1} of {request.quantity} done"
                await progress((index + 1) / request.quantity, done, image=image)
        if not images:
            raise ProviderError("The built-in renderer failed (simulated failure)")
        return ProviderResult(images=images, errors=errors)


def _ratio(request: ImageRequest) -> str | None:
    """The ratio to render: the one asked, else the standard ratio nearest the first
    reference's shape (image-to-image), else None (square)."""
    if request.aspect_ratio:
        return request.aspect_ratio
    if request.references:
        first = request.references[0]
        return nearest_ratio(first.width, first.height)
    return None


async def _report(progress: Progress, fraction: float, message: str) -> None:
    await progress(fraction, message)


def _render_png(
    prompt: str,
    seed: int,
    width: int,
    height: int,
    references: Sequence[Image.Image],
    steps: int,
    on_step: render.StepCallback | None,
) -> bytes:
    image = render.render(
        prompt,
        seed=seed,
        width=width,
        height=height,
        references=references,
        steps=steps,
        on_step=on_step,
    )
    return render.encode(image, "png")


@register("builtin")
def create(settings: Settings, models: Sequence[ModelSpec]) -> BuiltinProvider:
    return BuiltinProvider(
        latency_seconds=settings.builtin_latency_seconds,
        failure_rate=settings.builtin_failure_rate,
        steps=max(1, settings.builtin_steps),
        blocked_words=tuple(w.lower() for w in settings.builtin_safety_words),
    )
