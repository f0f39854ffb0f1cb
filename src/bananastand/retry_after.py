"""How long an HTTP answer asks us to wait: its `Retry-After` (and `retry-after-ms`).

Dependency-free (the standard library only): the client, installed without the
server's dependencies, imports it as well as the server's upstream providers.

Invariant: every answer is None (nothing usable was asked) or a finite number of
seconds >= 0. A date in the past is 0; a negative, infinite or unreadable value
is never passed on.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["parse_retry_after", "retry_after_from_headers"]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` value: delta-seconds or an HTTP date; None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a response's headers ask us to wait: `retry-after-ms` (milliseconds,
    sent by some APIs for sub-second waits) when readable, else `Retry-After`.
    `headers` must look names up case-insensitively (httpx, aiohttp and requests
    headers all do)."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            value = float(milliseconds) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    return parse_retry_after(headers.get("retry-after"))
