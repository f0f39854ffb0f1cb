"""The operator's model catalogue: public model names, costs, capabilities and
which backend renders each. Loaded from a TOML file (`catalog_path` setting;
the default ships beside this module as `catalog.toml`)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bananastand.errors import InvalidRequest, ModelUnavailable

DEFAULT_CATALOG = Path(__file__).parent / "catalog.toml"


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1)
    display_name: str = Field(alias="displayName")
    backend: str
    backend_model: str = Field(alias="backendModel")
    credits_cost: int = Field(alias="creditsCost", ge=0)
    extra_image_cost: int = Field(1, alias="extraImageCost", ge=0)
    supports_image_input: bool = Field(alias="supportsImageInput")
    supports_aspect_ratio: bool = Field(alias="supportsAspectRatio")
    aspect_ratios: tuple[str, ...] = Field((), alias="aspectRatios")
    max_quantity: int = Field(4, alias="maxQuantity", ge=1)
    max_reference_images: int = Field(3, alias="maxReferenceImages", ge=0)
    requires_pro: bool = Field(False, alias="requiresPro")
    streaming: bool = False
    timeout_seconds: float = Field(120.0, alias="timeoutSeconds", gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.supports_aspect_ratio and not self.aspect_ratios:
            raise ValueError(f"model {self.name!r}: supportsAspectRatio needs aspectRatios")
        return self

    def unit_cost(self, reference_count: int) -> int:
        """Credits for one image: the first reference image is included."""
        return self.credits_cost + self.extra_image_cost * max(0, reference_count - 1)

    def public(self) -> dict[str, Any]:
        """The `/api/v1/models` entry: the contract's fields, then extras."""
        return {
            "name": self.name,
            "displayName": self.display_name,
            "creditsCost": self.credits_cost,
            "supportsImageInput": self.supports_image_input,
            "supportsAspectRatio": self.supports_aspect_ratio,
            "requiresPro": self.requires_pro,
            "backend": self.backend,
            "aspectRatios": list(self.aspect_ratios),
            "maxQuantity": self.max_quantity,
            "maxReferenceImages": self.max_reference_images,
            "extraImageCost": self.extra_image_cost,
            "streaming": self.streaming,
        }


def load_entries(path: Path | None = None) -> list[ModelSpec]:
    """Read a catalogue file. A name may appear more than once: the first entry
    whose backend is usable here is the one offered (e.g. Gemini, else built-in)."""
    path = path or DEFAULT_CATALOG
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the model catalogue {path}: {exc}") from exc
    stray = sorted(set(raw) - {"models"})
    if stray:
        raise ValueError(
            f"invalid model catalogue {path}: unknown top-level keys {stray} "
            "(each model must follow a [[models]] line)"
        )
    try:
        return [ModelSpec.model_validate(entry) for entry in raw.get("models", [])]
    except ValidationError as exc:
        raise ValueError(f"invalid model catalogue {path}: {exc}") from exc


class Catalog:
    """The models on offer, in the file's order, and why the others are not."""

    def __init__(
        self, models: Iterable[ModelSpec], *, unavailable: dict[str, str] | None = None
    ) -> None:
        self._models: dict[str, ModelSpec] = {}
        for model in models:
            if model.name in self._models:
                raise ValueError(f"model {model.name!r} is listed twice")
            self._models[model.name] = model
        self.unavailable = dict(unavailable or {})

    @classmethod
    def resolve(
        cls, entries: Iterable[ModelSpec], reasons: Callable[[ModelSpec], str | None]
    ) -> Catalog:
        """Offer, per name, the first entry `reasons` has nothing against."""
        offered: dict[str, ModelSpec] = {}
        why_not: dict[str, list[str]] = {}
        for entry in entries:
            if entry.name in offered:
                continue
            reason = reasons(entry)
            if reason is None:
                offered[entry.name] = entry
            else:
                why_not.setdefault(entry.name, []).append(f"{entry.backend}: {reason}")
        unavailable = {name: "; ".join(why) for name, why in why_not.items() if name not in offered}
        return cls(offered.values(), unavailable=unavailable)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str) -> ModelSpec:
        model = self._models.get(name)
        if model is not None:
            return model
        if name in self.unavailable:
            raise ModelUnavailable(
                f"The model {name!r} is not available on this server "
                f"({self.unavailable[name]}); see GET /api/v1/models for the models on offer"
            )
        raise InvalidRequest(
            f"Unknown model {name!r}; see GET /api/v1/models for the models on offer"
        )
