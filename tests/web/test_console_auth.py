"""Sign up, sign in, sign out: passwords, sessions, CSRF and the login rate limit."""

from __future__ import annotations

from typing import Any

from tests.support import Api
from tests.web.conftest import PASSWORD, csrf_of


async def test_signing_up_signs_in_and_only_the_setup_code_makes_an_admin(
    api: Api, browser_factory: Any
) -> None:
    first = await browser_factory.signed_up()
    dashboard = await first.get("/console")
    assert dashboard.status_code == 200
    assert first.email in dashboard.text
    assert not (await first.account(api)).is_admin  # first come is not first served
    assert (await first.get("/console/admin/accounts")).status_code == 403

    stranger = browser_factory()
    page = await stranger.get("/console/signup")
    assert "Admin setup code" in page.text
    guessed = await stranger.submit(
        "/console/signup",
        "/console/signup",
        email="guess@example.test",
        password=PASSWORD,
        confirm=PASSWORD,
        setup_code="AAAA-BBBB-CCCC-DDDD",
    )
    assert guessed.status_code == 400
    assert "setup code is not right" in guessed.text
    assert await api.services.accounts.count() == 1

    operator = await browser_factory.signed_up(admin=True)
    assert (await operator.account(api)).is_admin
    assert (await operator.get("/console/admin/accounts")).status_code == 200
    # Once there is an admin the code is spent, and the page stops asking for it.
    assert "Admin setup code" not in (await browser_factory().get("/console/signup")).text
    late = browser_factory()
    answer = await late.submit(
        "/console/signup",
        "/console/signup",
        email="late@example.test",
        password=PASSWORD,
        confirm=PASSWORD,
        setup_code=api.services.console_auth.setup_code,
    )
    assert answer.status_code == 400
    assert "has an admin already" in answer.text


async def test_passwords_are_stored_as_argon2_hashes(api: Api, browser_factory: Any) -> None:
    browser = await browser_factory.signed_up()
    stored = (await browser.account(api)).password_hash
    assert stored is not None and stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_session_cookie_is_httponly_samesite_and_scoped_to_the_console(
    browser_factory: Any,
) -> None:
    browser = browser_factory()
    token = csrf_of(await browser.get("/console/signup"))
    answer = await browser.client.post(
        "/console/signup",
        data={
            "csrf_token": token,
            "email": "cookie@example.test",
            "password": PASSWORD,
            "confirm": PASSWORD,
        },
    )
    cookie = next(
        value
        for name, value in answer.headers.multi_items()
        if name == "set-cookie" and value.startswith("bananastand_session=")
    ).lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/console" in cookie
    assert "; secure" in cookie


async def test_cookies_are_secure_only_when_the_site_is_https(api_factory: Any) -> None:
    import httpx

    api = await api_factory(public_base_url="http://127.0.0.1:8000")
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        client = httpx.AsyncClient(transport=api.client._transport, base_url=base)
        page = await client.get("/console/signin")
        assert ("; secure" in page.headers["set-cookie"].lower()) is secure, base
        await client.aclose()
    forced = await api_factory(
        public_base_url="http://127.0.0.1:8000", console_secure_cookies="always"
    )
    client = httpx.AsyncClient(transport=forced.client._transport, base_url="http://testserver")
    assert "; secure" in (await client.get("/console/signin")).headers["set-cookie"].lower()
    await client.aclose()


async def test_wrong_password_is_refused_without_saying_which_part_was_wrong(
    browser_factory: Any,
) -> None:
    user = await browser_factory.signed_up()
    stranger = browser_factory()
    wrong = await stranger.submit(
        "/console/signin", "/console/signin", email=user.email, password="not the password"
    )
    unknown = await stranger.submit(
        "/console/signin", "/console/signin", email="nobody@example.test", password=PASSWORD
    )
    for answer in (wrong, unknown):
        assert answer.status_code == 401
        assert "Wrong email or password" in answer.text
    assert (await stranger.get("/console", follow_redirects=False)).status_code == 303


async def test_sign_in_then_sign_out_ends_the_session(browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    other = browser_factory()
    answer = await other.submit(
        "/console/signin",
        "/console/signin",
        email=user.email.upper(),
        password=PASSWORD,
        next="/console/generations",
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/generations"
    assert (await other.get("/console")).status_code == 200
    stolen = other.client.cookies.get("bananastand_session")
    out = await other.submit("/console", "/console/signout")
    assert out.status_code == 303
    replay = browser_factory()
    replay.client.cookies.set("bananastand_session", stolen, path="/console")
    page = await replay.get("/console", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/signin")


async def test_next_never_redirects_off_the_console(browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    for target in ("https://evil.example", "//evil.example", "/console/..//evil", "/api/v1"):
        other = browser_factory()
        answer = await other.submit(
            "/console/signin", "/console/signin", email=user.email, password=PASSWORD, next=target
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console", target


async def test_forms_without_the_csrf_token_are_refused(browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    no_token = await user.client.post("/console/settings/keys", data={"name": "x"})
    forged = await user.client.post(
        "/console/settings/keys", data={"name": "x", "csrf_token": "forged"}
    )
    cross_site = await user.client.post(
        "/console/settings/keys",
        data={"name": "x", "csrf_token": csrf_of(await user.get("/console"))},
        headers={"Origin": "https://evil.example"},
    )
    for answer in (no_token, forged, cross_site):
        assert answer.status_code == 403
        assert "text/html" in answer.headers["content-type"]
    assert "No keys yet" in (await user.get("/console/settings/keys")).text
    # Behind a proxy the browser's Origin is the public address: accepted.
    for origin in ("https://images.example.test", "https://testserver"):
        accepted = await user.client.post(
            "/console/settings/keys",
            data={"name": origin, "csrf_token": csrf_of(await user.get("/console"))},
            headers={"Origin": origin},
        )
        assert accepted.status_code == 303, origin
    anonymous = browser_factory()
    await anonymous.get("/console/signin")
    refused = await anonymous.client.post(
        "/console/signin", data={"email": user.email, "password": PASSWORD}
    )
    assert refused.status_code == 403


async def test_failed_sign_ins_are_rate_limited(api_factory: Any, browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    attacker = browser_factory()
    limit = 5  # BANANASTAND_CONSOLE_LOGIN_MAX_FAILURES's default
    for _ in range(limit):
        answer = await attacker.submit(
            "/console/signin", "/console/signin", email=user.email, password="guess guess"
        )
        assert answer.status_code == 401
    blocked = await attacker.submit(
        "/console/signin", "/console/signin", email=user.email, password=PASSWORD
    )
    assert blocked.status_code == 429
    assert "Too many sign-in attempts" in blocked.text
    assert blocked.headers["retry-after"] == "900"
    # The account's own session is untouched.
    assert (await user.get("/console")).status_code == 200


async def test_signup_can_be_closed_by_the_operator(api_factory: Any) -> None:
    import httpx

    api = await api_factory(console_signup=False)
    client = httpx.AsyncClient(transport=api.client._transport, base_url="https://testserver")
    page = await client.get("/console/signup")
    assert page.status_code == 403
    assert "Sign-up is closed" in page.text
    answer = await client.post(
        "/console/signup",
        data={
            "csrf_token": csrf_of(await client.get("/console/signin")),
            "email": "x@example.test",
            "password": PASSWORD,
            "confirm": PASSWORD,
        },
    )
    assert answer.status_code == 403
    assert await api.services.accounts.count() == 0
    await client.aclose()


async def test_bad_sign_up_input_gets_clear_errors_and_keeps_the_email(
    browser_factory: Any,
) -> None:
    taken = await browser_factory.signed_up()
    browser = browser_factory()
    cases = [
        ({"email": "new@example.test", "password": "short", "confirm": "short"}, "at least 8"),
        ({"email": "new@example.test", "password": PASSWORD, "confirm": "other"}, "differ"),
        ({"email": "not-an-email", "password": PASSWORD, "confirm": PASSWORD}, "Not an email"),
        ({"email": taken.email, "password": PASSWORD, "confirm": PASSWORD}, "already exists"),
    ]
    for fields, message in cases:
        answer = await browser.submit("/console/signup", "/console/signup", **fields)
        assert answer.status_code in (400, 409), fields
        assert message in answer.text
        assert fields["email"] in answer.text


async def test_admin_cli_sets_a_password_that_signs_in(api: Api, browser_factory: Any) -> None:
    account = await api.services.accounts.create(email="ops@example.test", is_admin=True)
    await api.services.console_auth.set_password(account.id, "a long operator password")
    browser = browser_factory()
    answer = await browser.submit(
        "/console/signin",
        "/console/signin",
        email="ops@example.test",
        password="a long operator password",
    )
    assert answer.status_code == 303
    assert (await browser.get("/console/admin/accounts")).status_code == 200


async def test_changing_the_password_signs_out_every_other_browser(
    browser_factory: Any,
) -> None:
    here = await browser_factory.signed_up()
    elsewhere = browser_factory()
    signed_in = await elsewhere.submit(
        "/console/signin", "/console/signin", email=here.email, password=PASSWORD
    )
    assert signed_in.status_code == 303
    wrong = await here.submit(
        "/console/settings/account",
        "/console/settings/account/password",
        current="not it at all",
        new="a brand new password",
        confirm="a brand new password",
    )
    assert wrong.status_code == 401
    assert "current password is not right" in wrong.text
    changed = await here.submit(
        "/console/settings/account",
        "/console/settings/account/password",
        current=PASSWORD,
        new="a brand new password",
        confirm="a brand new password",
    )
    assert changed.status_code == 303
    assert (await here.get("/console")).status_code == 200  # this browser stays in
    gone = await elsewhere.get("/console", follow_redirects=False)
    assert gone.status_code == 303  # the other one is out
    old = await browser_factory().submit(
        "/console/signin", "/console/signin", email=here.email, password=PASSWORD
    )
    assert old.status_code == 401
    new = await browser_factory().submit(
        "/console/signin", "/console/signin", email=here.email, password="a brand new password"
    )
    assert new.status_code == 303


async def test_a_right_password_clears_the_failures_and_sign_ups_do_not_lock_sign_in(
    api_factory: Any,
) -> None:
    import httpx

    api = await api_factory(console_login_max_failures=2)  # 2 per email, 8 per address
    client = httpx.AsyncClient(transport=api.client._transport, base_url="https://testserver")

    async def post(path: str, **fields: str) -> httpx.Response:
        client.cookies.delete("bananastand_session", path="/console")
        token = csrf_of(await client.get(path))
        return await client.post(path, data={"csrf_token": token, **fields})

    async def sign_up(email: str) -> httpx.Response:
        return await post("/console/signup", email=email, password=PASSWORD, confirm=PASSWORD)

    assert (await sign_up("owner@example.test")).status_code == 303
    # One wrong, one right, one wrong: the right one cleared the first.
    for password, status in ((" wrong one", 401), (PASSWORD, 303), (" wrong two", 401)):
        answer = await post("/console/signin", email="owner@example.test", password=password)
        assert answer.status_code == status
    assert (
        await post("/console/signin", email="owner@example.test", password=PASSWORD)
    ).status_code == 303
    # Sign-ups from one address are limited on their own (8 here) ...
    for number in range(7):
        assert (await sign_up(f"colleague{number}@example.test")).status_code == 303
    refused = await sign_up("one-too-many@example.test")
    assert refused.status_code == 429
    assert "sign-ups from this address" in refused.text
    assert refused.headers["retry-after"]
    # ... and never lock anyone out of signing in.
    assert (
        await post("/console/signin", email="owner@example.test", password=PASSWORD)
    ).status_code == 303
    await client.aclose()
