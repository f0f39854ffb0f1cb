"""`outcomes.settle` and `BaseProvider`: what every backend shares."""

from __future__ import annotations

import pytest

from bananastand.providers.base import (
    SAFETY_MESSAGE,
    BaseProvider,
    GeneratedImage,
    ImageRequest,
    Progress,
    Provider,
    ProviderError,
    ProviderResult,
)
from bananastand.providers.outcomes import Blocked, Failed, Made, safety_verdict, settle


def test_no_outcome_at_all_is_a_failure_naming_the_upstream() -> None:
    with pytest.raises(ProviderError, match=r"^Up made no image$"):
        settle([], upstream="Up")


def test_reasons_are_distinct_and_bounded() -> None:
    failures = [Failed("a"), Failed("b"), Failed("a"), Failed("c"), Failed("d")]
    with pytest.raises(ProviderError, match=r"^a; b; c$"):
        settle(failures, upstream="Up")
    with pytest.raises(ProviderError, match=r"^a$"):
        settle(failures, upstream="Up", max_reasons=1)


def test_a_partial_result_lists_what_was_not_made_in_the_callers_words() -> None:
    image = GeneratedImage(b"png")

    def short(number: int, total: int, outcome: Blocked | Failed, upstream: str) -> str:
        return f"#{number}/{total} {upstream} {type(outcome).__name__}"

    result = settle([Blocked("why"), Made(image), Failed("x")], upstream="Up", describe=short)
    assert result == ProviderResult(images=[image], errors=["#1/3 Up Blocked", "#3/3 Up Failed"])


def test_the_safety_verdict_is_the_contracts_warning() -> None:
    assert safety_verdict() == ProviderResult(images=[], safety_message=SAFETY_MESSAGE)
    assert settle([Blocked("why"), Failed("x")], upstream="Up") == safety_verdict()


class Minimal(BaseProvider):
    name = "minimal"

    async def generate(self, request: ImageRequest, progress: Progress) -> ProviderResult:
        return safety_verdict()


async def test_a_base_provider_needs_only_generate() -> None:
    provider: Provider = Minimal()
    assert provider.unavailable("any-model") is None
    assert await provider.start() is None
    assert await provider.aclose() is None
    with pytest.raises(TypeError):
        BaseProvider()  # type: ignore[abstract]
