"""The `diffusers` backend's registration: local diffusion models.

Importing torch takes seconds, so `create()` first checks (cheaply, with no
network) whether any catalogued model's weights are here; only then does it
import `diffusers_provider`, where the provider itself lives. A server whose
catalogue lists `sd-turbo` without its weights therefore starts instantly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bananastand.catalog import ModelSpec
from bananastand.config import Settings
from bananastand.providers import Unusable, register
from bananastand.providers.diffusers_options import locate

if TYPE_CHECKING:
    from bananastand.providers.diffusers_provider import DiffusersProvider


@register("diffusers")
def create(settings: Settings, models: Sequence[ModelSpec]) -> DiffusersProvider:
    model_ids = list(dict.fromkeys(model.backend_model for model in models))
    reasons = {
        model_id: locate(model_id, allow_download=settings.diffusers_allow_download)
        for model_id in model_ids
    }
    if all(reasons.values()):
        raise Unusable("; ".join(dict.fromkeys(r for r in reasons.values() if r)))
    from bananastand.providers import diffusers_provider

    return diffusers_provider.build(settings, model_ids)
