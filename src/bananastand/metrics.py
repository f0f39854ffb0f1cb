"""Prometheus metrics: what an operator watches.

- `bananastand_http_requests_total{route,method,status}` and request latency
- `bananastand_generations_total{model,outcome}` (completed, partial, failed, blocked)
- `bananastand_provider_seconds{backend,model}`: time inside a backend
- `bananastand_credits_total{kind}`: credits charged (at acceptance) and refunded
- `bananastand_queue_depth`: async generations waiting (read at scrape time)
- `bananastand_payments_total{outcome}`: self-serve payments by what became of them
  (created, paid, processing, failed, expired, mismatch, refunded,
  partially_refunded, disputed_lost, error)
- `bananastand_stripe_events_total{outcome}`: Stripe webhook deliveries (applied,
  duplicate, ignored, unknown, rejected)

API processes serve them at `/metrics`; workers at `worker_metrics_port`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "bananastand_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "bananastand_http_request_seconds", "Time to answer (to the first byte)", ["route", "method"]
)
GENERATIONS = Counter(
    "bananastand_generations_total", "Generations settled, by outcome", ["model", "outcome"]
)
PROVIDER_SECONDS = Histogram(
    "bananastand_provider_seconds",
    "Time a backend took for one generation",
    ["backend", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
)
CREDITS = Counter("bananastand_credits_total", "Credits charged and refunded", ["kind"])
PAYMENTS = Counter("bananastand_payments_total", "Self-serve payments, by outcome", ["outcome"])
STRIPE_EVENTS = Counter(
    "bananastand_stripe_events_total", "Stripe webhook deliveries, by outcome", ["outcome"]
)
QUEUE_DEPTH = Gauge("bananastand_queue_depth", "Async generations waiting to run")


def outcome(state: str, images: int, quantity: int, warning: bool) -> str:
    if warning:
        return "blocked"
    if state == "failed":
        return "failed"
    return "completed" if images >= quantity else "partial"


class RequestMetrics:
    """ASGI middleware counting requests by route template (not raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Each label set's children, looked up once (`labels()` locks and allocates).
        self._seconds: dict[tuple[str, str], Any] = {}
        self._answered: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._observe(scope, message["status"], time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, record)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route(scope)
        # Clients choose the method: unknown ones share a label (bounded series).
        method = scope["method"] if scope["method"] in _METHODS else "other"
        timer = self._seconds.get((route, method))
        if timer is None:
            timer = self._seconds[(route, method)] = HTTP_SECONDS.labels(route, method)
        timer.observe(seconds)
        counter = self._answered.get((route, method, status))
        if counter is None:
            counter = self._answered[(route, method, status)] = HTTP_REQUESTS.labels(
                route, method, str(status)
            )
        counter.inc()


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


async def refresh(queue_depth: Callable[[], Awaitable[int]]) -> CollectorRegistry:
    """Update the scrape-time gauges; returns the registry to expose."""
    QUEUE_DEPTH.set(await queue_depth())
    return REGISTRY


async def keep_fresh(queue_depth: Callable[[], Awaitable[int]], *, every: float) -> None:
    """Refresh the scrape-time gauges every `every` seconds (for processes whose
    metrics are served by prometheus_client's own thread: workers)."""
    while True:
        try:
            QUEUE_DEPTH.set(await queue_depth())
        except Exception:  # the database is away: the next round tries again
            log.debug("queue depth unavailable")
        await asyncio.sleep(every)
