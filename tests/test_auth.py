"""API keys: shape, hashing, the 5-key limit, revocation, 401 and 403."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bananastand.errors import Conflict
from tests.support import BOTH_DEPLOYMENTS, Api

pytestmark = BOTH_DEPLOYMENTS


async def test_keys_are_nb_high_entropy_and_stored_hashed(api: Api) -> None:
    key = await api.account()
    assert key.secret.startswith("nb_")
    assert len(key.secret) >= 40
    rows = await api.services.db.read(
        lambda tx: list(tx.session.execute(text("SELECT * FROM api_keys")))
    )
    dump = "\n".join(str(row) for row in rows)
    assert key.secret not in dump
    assert key.secret[3:] not in dump


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer nb_short",
        "nb_" + "a" * 43,
        "Bearer nb_" + "a" * 43,
        "Bearer sk-" + "a" * 43,
    ],
)
async def test_missing_malformed_or_unknown_keys_are_401(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, url in (
        ("POST", "/api/v1/generate"),
        ("GET", "/api/v1/credits"),
        ("GET", "/api/v1/generate?id=abc"),
    ):
        response = await api.client.request(method, url, json={"prompt": "cat"}, headers=headers)
        assert response.status_code == 401, (method, url, response.text)
        assert response.json()["type"] == "unauthorized"


async def test_revoked_key_is_401_and_other_keys_keep_working(api: Api) -> None:
    key = await api.account()
    other = await api.services.accounts.create_key(key.account_id, name="second")
    await api.services.accounts.revoke_key(other.key.id)
    revoked = await api.client.get(
        "/api/v1/credits", headers={"Authorization": f"Bearer {other.secret}"}
    )
    assert revoked.status_code == 401
    assert (await api.client.get("/api/v1/credits", headers=key.headers)).status_code == 200


async def test_account_without_api_access_is_403(api: Api) -> None:
    key = await api.account(api_access=False)
    response = await api.generate(key, prompt="cat")
    assert response.status_code == 403
    assert response.json()["type"] == "api_access_disabled"
    assert (await api.client.get("/api/v1/credits", headers=key.headers)).status_code == 403


async def test_at_most_five_live_keys_and_revoking_frees_a_place(api: Api) -> None:
    key = await api.account()  # holds one key already
    extra = [await api.services.accounts.create_key(key.account_id) for _ in range(4)]
    with pytest.raises(Conflict):
        await api.services.accounts.create_key(key.account_id)
    await api.services.accounts.revoke_key(extra[0].key.id)
    await api.services.accounts.create_key(key.account_id)


async def test_key_limit_is_configurable(api_factory) -> None:  # type: ignore[no-untyped-def]
    api = await api_factory(max_keys_per_account=1)
    key = await api.account()
    with pytest.raises(Conflict):
        await api.services.accounts.create_key(key.account_id)


async def test_models_needs_no_key_but_credits_does(api: Api) -> None:
    models = await api.client.get("/api/v1/models")
    assert models.status_code == 200
    entry = models.json()["data"][0]
    assert {
        "name",
        "displayName",
        "creditsCost",
        "supportsImageInput",
        "supportsAspectRatio",
        "requiresPro",
    } <= set(entry)
    assert entry["name"] == "nano-banana"
    assert entry["creditsCost"] == 1
    assert entry["backend"] == "builtin"
    assert (await api.client.get("/api/v1/credits")).status_code == 401
