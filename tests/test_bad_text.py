"""Text the database cannot store (NUL characters, PostgreSQL) or absurd sizes is
a clear 400 in both deployments, never a 500, and charges nothing."""

from __future__ import annotations

from tests.support import BOTH_DEPLOYMENTS, Api

pytestmark = BOTH_DEPLOYMENTS


async def test_nul_characters_are_refused_not_a_server_error(api: Api) -> None:
    key = await api.account(credits=10)
    answer = await api.generate(key, prompt="a\u0000b")
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "prompt must not contain NUL characters",
        "type": "invalid_request",
    }
    for path in ("/api/v1/generate?id=a%00b", "/api/v1/generations?before=a%00b"):
        answer = await api.client.get(path, headers=key.headers)
        assert answer.status_code in (400, 404), path
        assert answer.json()["type"] in ("invalid_request", "not_found")
    assert await api.balance(key) == 10


async def test_emails_with_nul_or_absurd_length_are_not_accounts(api: Api) -> None:
    from bananastand.errors import InvalidRequest

    for email in ("nul\x00user@example.test", "x" * 400 + "@example.test"):
        try:
            await api.services.accounts.create(email=email)
        except InvalidRequest as exc:
            assert "Not an email address" in exc.message
        else:
            raise AssertionError(f"accepted {email[:20]!r}")
    assert await api.services.accounts.count() == 0
