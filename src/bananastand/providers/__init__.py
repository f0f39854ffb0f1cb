"""Image backends behind one small protocol, found by name in a registry.

A backend module registers a factory: `factory(settings) -> Provider | None`;
None means "not usable here" (no key, no weights), with the reason logged.
"""

from __future__ import annotations

from collections.abc import Callable

from bananastand.config import Settings
from bananastand.providers.base import (
    GeneratedImage,
    ImageRequest,
    Progress,
    Provider,
    ProviderError,
    ProviderResult,
    ReferenceImage,
)

__all__ = [
    "REGISTRY",
    "GeneratedImage",
    "ImageRequest",
    "Progress",
    "Provider",
    "ProviderError",
    "ProviderResult",
    "ReferenceImage",
    "Unusable",
    "build_providers",
    "register",
]


class Unusable(Exception):
    """Raised by a factory when its backend cannot run here; the message says why."""


Factory = Callable[[Settings], Provider]
REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        REGISTRY[name] = factory
        return factory

    return wrap


def build_providers(
    settings: Settings, names: set[str]
) -> tuple[dict[str, Provider], dict[str, str]]:
    """Build the named backends; returns (usable providers, reasons the others are not)."""
    from bananastand.providers import builtin  # noqa: F401  (registers itself)

    providers: dict[str, Provider] = {}
    unusable: dict[str, str] = {}
    for name in sorted(names):
        factory = REGISTRY.get(name)
        if factory is None:
            unusable[name] = f"no backend called {name!r}"
            continue
        try:
            providers[name] = factory(settings)
        except Unusable as exc:
            unusable[name] = str(exc)
    return providers, unusable
