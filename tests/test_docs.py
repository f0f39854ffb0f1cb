"""Documentation that cannot drift: settings, CLI commands and endpoints."""

from __future__ import annotations

from pathlib import Path

from bananastand.config import Settings
from bananastand.server_cli import admin
from tests.support import Api

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


async def test_real_answers_match_the_documented_schemas(api: Api) -> None:
    from bananastand.api import schemas

    key = await api.account(credits=10)
    sync = (await api.generate(key, prompt="cat")).json()
    schemas.SyncSuccess.model_validate(sync, strict=True)
    accepted = (await api.generate(key, prompt="cat", mode="async")).json()
    schemas.AsyncAccepted.model_validate(accepted)
    await api.services.generation.dispatcher.wait(accepted["generationId"])
    record = (
        await api.client.get(
            "/api/v1/generate", params={"id": accepted["generationId"]}, headers=key.headers
        )
    ).json()
    schemas.GenerationEnvelope.model_validate(record)
    schemas.ModelList.model_validate((await api.client.get("/api/v1/models")).json())
    schemas.CreditsBody.model_validate(
        (await api.client.get("/api/v1/credits", headers=key.headers)).json()
    )
    schemas.ErrorBody.model_validate((await api.generate(key, prompt="")).json())


async def test_openapi_declares_bearer_auth_and_no_422(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
    post = spec["paths"]["/api/v1/generate"]["post"]["responses"]
    assert {"400", "401", "402", "403", "429", "503"} <= set(post)
    assert "SyncSuccess" in spec["components"]["schemas"]


async def test_metrics_count_requests_generations_and_credits(api: Api) -> None:
    key = await api.account(credits=10)
    await api.generate(key, prompt="cat", quantity=2)
    await api.client.get("/api/v1/credits", headers=key.headers)
    text = (await api.client.get("/metrics")).text
    assert (
        'bananastand_http_requests_total{method="POST",route="/api/v1/generate",status="200"}'
        in text
    )
    assert 'bananastand_generations_total{model="nano-banana",outcome="completed"}' in text
    assert 'bananastand_credits_total{kind="charged"}' in text
    assert "bananastand_provider_seconds_bucket" in text
    assert "bananastand_queue_depth" in text


async def test_readiness_reports_each_dependency(api: Api) -> None:
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "up"
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
