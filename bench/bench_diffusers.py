"""Dynamic batching of the local diffusers backend, measured side by side.

Builds the tiny random-weight pipeline of the tests (no download), loads it
through the real `from_pretrained` path, then fires the same burst of
concurrent single-image requests at two providers in one run: one that never
batches (max batch 1) and one that batches (window 20 ms, max batch 8).
Prints wall time, images/s, pipeline calls and the throughput ratio. On a GPU
with a real model (set --model to a local pipeline folder) the gap is larger:
the per-call overhead there is kernel launches, not Python.

Usage: python bench/bench_diffusers.py [--requests 32] [--size 64] [--steps 2]
       [--model PATH] [--device auto]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bananastand.config import Settings
from bananastand.providers import diffusers_provider
from bananastand.providers.base import ImageRequest


async def burst(settings: Settings, model: str, requests: int, options: dict) -> tuple[float, int]:  # type: ignore[type-arg]
    provider = diffusers_provider.build(settings, [model])
    await provider.start()
    reason = provider.unavailable(model)
    assert reason is None, reason

    async def progress(_fraction: float, _message: str) -> None:
        return None

    async def one(seed: int) -> None:
        request = ImageRequest(
            prompt=f"bench {seed}", backend_model=model, quantity=1, seed=seed, options=options
        )
        result = await provider.generate(request, progress)
        assert len(result.images) == 1

    await asyncio.gather(*(one(i) for i in range(2)))  # warm-up
    calls_before = provider.stats.pipeline_calls
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    elapsed = time.perf_counter() - started
    calls = provider.stats.pipeline_calls - calls_before
    await provider.aclose()
    return elapsed, calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--model", default="")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    options = {"baseSize": args.size, "steps": args.steps}
    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if not model:
            from tests.providers.tiny_pipeline import build_tiny_pipeline

            model = str(build_tiny_pipeline(Path(folder) / "tiny"))
        common = {"diffusers_device": args.device, "data_dir": Path(folder) / "data"}
        results = {}
        for label, window, batch in (("unbatched", 0.0, 1), ("batched", 20.0, 8)):
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                diffusers_batch_window_ms=window,
                diffusers_max_batch=batch,
                **common,
            )
            elapsed, calls = asyncio.run(burst(settings, model, args.requests, options))
            results[label] = elapsed
            print(
                f"{label:<10} {args.requests} images in {elapsed:6.2f} s  "
                f"{args.requests / elapsed:7.1f} images/s  {calls} pipeline calls"
            )
        print(f"\nbatched / unbatched throughput: {results['unbatched'] / results['batched']:.2f}x")


if __name__ == "__main__":
    main()
