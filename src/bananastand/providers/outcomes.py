"""What one upstream call amounts to, and what a request's calls amount to together.

Every call ends `Made` (an image), `Blocked` (a safety verdict) or `Failed` (a
client-safe reason). `settle` applies the one outcome policy:

- any image: a `ProviderResult` with those images, each other call's reason in
  `errors` (the images not made are refunded);
- no image and at least one safety block: the contract's safety warning;
- no image otherwise: `ProviderError`, with up to `max_reasons` distinct reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bananastand.providers.base import (
    SAFETY_MESSAGE,
    GeneratedImage,
    ProviderError,
    ProviderResult,
)


@dataclass(frozen=True)
class Made:
    image: GeneratedImage


@dataclass(frozen=True)
class Blocked:
    reason: str  # upstream's word for it, e.g. "IMAGE_SAFETY" or "moderation_blocked"


@dataclass(frozen=True)
class Failed:
    message: str  # safe to show clients


Outcome = Made | Blocked | Failed

#: How a call that made no image is listed in a partial result's `errors`:
#: (its number from 1, the number of calls, the outcome, the upstream's name).
Describe = Callable[[int, int, Blocked | Failed, str], str]


def safety_verdict() -> ProviderResult:
    """The contract's safety warning: no images, `SAFETY_MESSAGE`."""
    return ProviderResult(images=[], safety_message=SAFETY_MESSAGE)


def describe_missing(number: int, total: int, outcome: Blocked | Failed, upstream: str) -> str:
    """ "image 2 of 3: <reason>", or "…: blocked by <upstream>'s safety filter (<why>)"."""
    which = f"image {number} of {total}"
    if isinstance(outcome, Blocked):
        return f"{which}: blocked by {upstream}'s safety filter ({outcome.reason})"
    return f"{which}: {outcome.message}"


def settle(
    outcomes: Sequence[Outcome],
    *,
    upstream: str,
    describe: Describe = describe_missing,
    max_reasons: int = 3,
) -> ProviderResult:
    """Apply the outcome policy (see the module docstring) to one request's calls,
    in call order. Raises `ProviderError` when no image was made and none blocked."""
    images = [o.image for o in outcomes if isinstance(o, Made)]
    if not images:
        if any(isinstance(o, Blocked) for o in outcomes):
            return safety_verdict()
        reasons = dict.fromkeys(o.message for o in outcomes if isinstance(o, Failed))
        raise ProviderError("; ".join(list(reasons)[:max_reasons]) or f"{upstream} made no image")
    total = len(outcomes)
    errors = [
        describe(number, total, outcome, upstream)
        for number, outcome in enumerate(outcomes, start=1)
        if not isinstance(outcome, Made)
    ]
    return ProviderResult(images=images, errors=errors)
