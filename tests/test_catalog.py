"""The model catalogue: file format, first-usable-entry-wins, pro models."""

from __future__ import annotations

from pathlib import Path

import pytest

from bananastand.catalog import Catalog, ModelSpec, load_entries
from bananastand.errors import InvalidRequest, ModelUnavailable

BUILTIN_PRO = """
[[models]]
name = "banana-pro"
displayName = "Banana Pro"
backend = "builtin"
backendModel = "builtin-v1"
creditsCost = 3
supportsImageInput = true
supportsAspectRatio = false
requiresPro = true

[[models]]
name = "banana-cloud"
displayName = "Banana Cloud"
backend = "nowhere"
backendModel = "x"
creditsCost = 1
supportsImageInput = false
supportsAspectRatio = false
"""


def _spec(name: str, backend: str) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "displayName": name,
            "backend": backend,
            "backendModel": "m",
            "creditsCost": 1,
            "supportsImageInput": False,
            "supportsAspectRatio": False,
        }
    )


def test_first_usable_entry_of_a_name_is_offered() -> None:
    entries = [_spec("a", "cloud"), _spec("a", "local"), _spec("b", "cloud")]
    catalog = Catalog.resolve(entries, lambda m: "no key" if m.backend == "cloud" else None)
    assert [(m.name, m.backend) for m in catalog] == [("a", "local")]
    assert catalog.unavailable == {"b": "cloud: no key"}
    with pytest.raises(ModelUnavailable, match="not available on this server"):
        catalog.get("b")
    with pytest.raises(InvalidRequest, match="Unknown model"):
        catalog.get("zzz")


def test_default_catalogue_without_keys_offers_the_builtin_models() -> None:
    entries = load_entries()
    names = {m.name for m in entries}
    assert {"nano-banana", "nano-banana-pro", "gpt-image-1", "sd-turbo"} <= names
    assert [m.backend for m in entries if m.name == "nano-banana"] == ["gemini", "builtin"]
    catalog = Catalog.resolve(entries, lambda m: None if m.backend == "builtin" else "off")
    assert catalog.get("nano-banana").backend == "builtin"
    assert "nano-banana-pro" in catalog.unavailable


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[[models]]\nname = 'x'\n", "invalid model catalogue"),
        ("name = 'x'\n", "unknown top-level keys"),
        ("not = [toml", "cannot read"),
        (
            BUILTIN_PRO.replace("supportsAspectRatio = false", "supportsAspectRatio = true", 1),
            "aspectRatios",
        ),
    ],
)
def test_bad_catalogue_files_are_refused_with_the_reason(
    tmp_path: Path, text: str, error: str
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        load_entries(path)


def test_missing_catalogue_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_entries(tmp_path / "nope.toml")


async def test_pro_model_needs_the_pro_flag(api_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(BUILTIN_PRO)
    api = await api_factory(catalog_path=catalog, default_model="banana-pro")
    regular = await api.account(credits=10)
    response = await api.generate(regular, prompt="cat", selectedModel="banana-pro")
    assert response.status_code == 403
    assert response.json()["type"] == "pro_required"
    assert await api.balance(regular) == 10
    pro = await api.account(credits=10, is_pro=True)
    response = await api.generate(pro, prompt="cat", selectedModel="banana-pro")
    assert response.status_code == 200
    assert response.json()["creditsUsed"] == 3
    models = (await api.client.get("/api/v1/models")).json()["data"]
    assert [m["name"] for m in models] == ["banana-pro"]
    assert models[0]["requiresPro"] is True
    unusable = await api.generate(pro, prompt="cat", selectedModel="banana-cloud")
    assert unusable.status_code == 400
    assert "no backend called 'nowhere'" in unusable.json()["error"]
