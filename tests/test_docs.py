"""Documentation that cannot drift: settings, CLI commands and endpoints."""

from __future__ import annotations

from pathlib import Path

from bananastand.cli import admin
from bananastand.config import Settings
from tests.conftest import Api

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_with_its_description() -> None:
    for name, field in Settings.model_fields.items():
        assert f"BANANASTAND_{name.upper()}" in README, name
        assert field.description, f"setting {name} has no description"


def test_every_admin_command_is_in_the_readme() -> None:
    for command in admin.registered_commands:
        assert f"bananastand admin {command.name}" in README, command.name


def test_readme_names_the_two_commands() -> None:
    assert "make serve" in README
    assert "make test" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci


async def test_openapi_documents_every_endpoint(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {"post", "get"} <= set(paths["/api/v1/generate"])
    assert "get" in paths["/api/v1/models"]
    assert "get" in paths["/api/v1/credits"]
    assert "get" in paths["/images/{expires}/{signature}/{filename}"]
    body = paths["/api/v1/generate"]["post"]["requestBody"]["content"]["application/json"]
    properties = body["schema"]["properties"]
    assert {
        "prompt",
        "selectedModel",
        "referenceImageUrls",
        "aspectRatio",
        "quantity",
        "mode",
    } <= set(properties)
