"""Benchmark the built-in offline renderer: render + encode at 1024x1024.

Run from the repository root:  python bench/bench_render.py [--runs 50] [--format png]
Prints median / p95 milliseconds for render, encode and total, for text-to-image and for
image-to-image (one 1536x1024 reference and two references).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from PIL import Image, ImageDraw

from bananastand.render import encode, render

SIZE = 1024


def _reference(width: int, height: int) -> Image.Image:
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for i in range(0, width, 96):
        draw.rectangle((i, 0, i + 40, height), fill=(40 + i % 200, 90, 160))
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(230, 90, 40))
    return img


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _bench(name: str, refs: Sequence[Image.Image], runs: int, fmt: str) -> None:
    render("warm-up", seed=-1, width=SIZE, height=SIZE, references=refs)
    render_ms: list[float] = []
    encode_ms: list[float] = []
    sizes: list[int] = []
    for i in range(runs):
        t0 = time.perf_counter()
        img = render(f"benchmark prompt {i}", seed=i, width=SIZE, height=SIZE, references=refs)
        t1 = time.perf_counter()
        data = encode(img, fmt)
        t2 = time.perf_counter()
        render_ms.append((t1 - t0) * 1000)
        encode_ms.append((t2 - t1) * 1000)
        sizes.append(len(data))
    total_ms = [r + e for r, e in zip(render_ms, encode_ms, strict=True)]
    kib = statistics.median(sizes) / 1024
    print(f"{name} ({runs} runs, {SIZE}x{SIZE}, {fmt}, median {kib:.0f} KiB)")
    for label, values in (("render", render_ms), ("encode", encode_ms), ("total", total_ms)):
        median, p95 = statistics.median(values), _percentile(values, 0.95)
        print(f"  {label:<7} median {median:7.1f} ms   p95 {p95:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--format", default="png", choices=["png", "jpeg", "webp"])
    args = parser.parse_args()
    _bench("text-to-image", (), args.runs, args.format)
    _bench("image-to-image, 1 ref 1536x1024", (_reference(1536, 1024),), args.runs, args.format)
    two = (_reference(1536, 1024), _reference(800, 1200))
    _bench("image-to-image, 2 refs", two, args.runs, args.format)


if __name__ == "__main__":
    main()
