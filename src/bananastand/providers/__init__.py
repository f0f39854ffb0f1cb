"""Image backends behind one small protocol, found by name in a registry.

A backend module registers a factory: `factory(settings, models) -> Provider`,
where `models` are the catalogue entries bound to it. A factory raises
`Unusable("why")` when the backend cannot run here at all (no key, library
missing); a provider's `unavailable(backend_model)` says when one model cannot
(no weights). Both reasons are logged at start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bananastand.config import Settings
from bananastand.providers.base import (
    SAFETY_MESSAGE,
    BaseProvider,
    GeneratedImage,
    ImageRequest,
    Previews,
    Progress,
    Provider,
    ProviderError,
    ProviderResult,
    ReferenceImage,
)

__all__ = [
    "REGISTRY",
    "SAFETY_MESSAGE",
    "BaseProvider",
    "GeneratedImage",
    "ImageRequest",
    "Previews",
    "Progress",
    "Provider",
    "ProviderError",
    "ProviderResult",
    "ReferenceImage",
    "Unusable",
    "api_key",
    "build_providers",
    "register",
]


class Unusable(Exception):
    """Raised by a factory when its backend cannot run here; the message says why."""


if TYPE_CHECKING:
    from bananastand.catalog import ModelSpec

Factory = Callable[[Settings, "Sequence[ModelSpec]"], Provider]
REGISTRY: dict[str, Factory] = {}

# backend name -> module that registers it (imported only when the catalogue uses it,
# so optional SDKs are needed only by the operators who use them)
MODULES = {
    "builtin": "bananastand.providers.builtin",
    "gemini": "bananastand.providers.gemini",
    "openai": "bananastand.providers.openai_images",
    "diffusers": "bananastand.providers.diffusers_backend",
}


# backend name -> the setting holding its API key: without one the backend is not
# usable, and its (large) SDK is not even imported.
API_KEYS = {"gemini": "gemini_api_key", "openai": "openai_api_key"}


def api_key(settings: Settings, backend: str) -> str:
    """The backend's API key; `Unusable` when none is set."""
    name = API_KEYS[backend]
    key = str(getattr(settings, name).get_secret_value()).strip()
    if not key:
        raise Unusable(f"no API key (set BANANASTAND_{name.upper()})")
    return key


def register(name: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        REGISTRY[name] = factory
        return factory

    return wrap


def build_providers(
    settings: Settings, models: Sequence[ModelSpec]
) -> tuple[dict[str, Provider], dict[str, str]]:
    """Build the backends the catalogue uses; returns (usable providers, reasons the
    others are not usable)."""
    providers: dict[str, Provider] = {}
    unusable: dict[str, str] = {}
    for name in sorted({m.backend for m in models}):
        module = MODULES.get(name)
        if module is None:
            unusable[name] = f"no backend called {name!r}"
            continue
        try:
            if name in API_KEYS:
                api_key(settings, name)
        except Unusable as exc:
            unusable[name] = str(exc)
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            unusable[name] = f"its library is not installed ({exc.name})"
            continue
        try:
            providers[name] = REGISTRY[name](settings, [m for m in models if m.backend == name])
        except Unusable as exc:
            unusable[name] = str(exc)
    return providers, unusable
