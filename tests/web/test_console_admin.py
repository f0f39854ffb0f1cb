"""Admin pages: only admins get in; every change they make is in the audit log."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from bananastand.admin import describe
from bananastand.web.admin_pages import FLASH_COOKIE
from bananastand.web.deps import SESSION_COOKIE
from bananastand.web.deps import _when as when
from tests.support import Api
from tests.web.conftest import PASSWORD

ROW = r'href="/console/admin/accounts/\w+">([a-z0-9]+)@example.test</a>'
# Pages of two rows: this module's `api` takes settings from an indirect parameter.
SMALL_PAGES = pytest.mark.parametrize("api", [{"console_admin_page_size": 2}], indirect=True)


@pytest.fixture
async def api(api_factory: Any, request: pytest.FixtureRequest) -> Api:
    return await api_factory(**getattr(request, "param", {}))  # type: ignore[no-any-return]


async def admin_and_user(browser_factory: Any) -> tuple[Any, Any]:
    admin = await browser_factory.signed_up("admin@example.test", admin=True)
    user = await browser_factory.signed_up("user@example.test")
    return admin, user


async def test_non_admins_get_403_on_every_admin_page_and_action(
    api: Api, browser_factory: Any
) -> None:
    _admin, user = await admin_and_user(browser_factory)
    target = await user.account(api)
    for path in (
        "/console/admin/accounts",
        f"/console/admin/accounts/{target.id}",
        "/console/admin/audit",
    ):
        page = await user.get(path)
        assert page.status_code == 403, path
        assert "for administrators" in page.text
    answer = await user.submit(
        "/console", f"/console/admin/accounts/{target.id}/credits", credits="1000", reason="me"
    )
    assert answer.status_code == 403
    assert await api.services.billing.balance(target.id) == 0
    assert await api.services.admin.audit_log(account_id=target.id) == []


async def test_recharge_turns_api_access_on_and_is_audited(api: Api, browser_factory: Any) -> None:
    admin, user = await admin_and_user(browser_factory)
    target = await user.account(api)
    page = f"/console/admin/accounts/{target.id}"
    answer = await admin.submit(
        page, f"{page}/recharge", money="1000", credits="500", note="bank transfer"
    )
    assert answer.status_code == 303
    shown = await admin.get(answer.headers["location"])
    assert "Recharge recorded." in shown.text
    assert 'data-testid="api-access">on<' in shown.text
    assert (await user.account(api)).api_access
    assert await api.services.billing.balance(target.id) == 500
    entry = (await api.services.admin.audit_log(account_id=target.id))[0]
    assert (entry.actor, entry.action, entry.account_id) == (
        "admin@example.test",
        "recharge",
        target.id,
    )
    assert entry.details["api_access_enabled"] is True
    dashboard = await user.get("/console")
    assert "bank transfer" in dashboard.text and "Enabled" in dashboard.text


async def test_grant_deduct_flags_and_limit_each_leave_an_audit_entry(
    api: Api, browser_factory: Any
) -> None:
    admin, user = await admin_and_user(browser_factory)
    target = await user.account(api)
    page = f"/console/admin/accounts/{target.id}"
    await admin.submit(page, f"{page}/credits", direction="grant", credits="30", reason="promo")
    await admin.submit(page, f"{page}/credits", direction="deduct", credits="5", reason="fix")
    await admin.submit(page, f"{page}/flags", api_access="on", is_pro="on", concurrency_limit="4")
    account = await user.account(api)
    assert (account.api_access, account.is_pro, account.concurrency_limit) == (True, True, 4)
    assert await api.services.billing.balance(target.id) == 25
    ledger = await api.services.billing.ledger(target.id)
    assert [(e.amount, e.note) for e in ledger] == [(-5, "fix"), (30, "promo")]
    log = await api.services.admin.audit_log(account_id=target.id)
    was = {"api_access": False, "is_pro": False, "concurrency_limit": None}
    assert [(e.action, e.details) for e in reversed(log)] == [
        ("grant", {"credits": 30, "reason": "promo"}),
        ("deduct", {"credits": -5, "reason": "fix"}),
        ("update", {"api_access": True, "is_pro": True, "concurrency_limit": 4, "was": was}),
    ]
    audit = await admin.get("/console/admin/audit")
    assert audit.text.count("admin@example.test") >= 3
    # Saving the form unchanged changes (and logs) nothing.
    await admin.submit(page, f"{page}/flags", api_access="on", is_pro="on", concurrency_limit="4")
    assert len(await api.services.admin.audit_log(account_id=target.id)) == 3


async def test_bad_admin_input_is_explained_and_changes_nothing(
    api: Api, browser_factory: Any
) -> None:
    admin, user = await admin_and_user(browser_factory)
    target = await user.account(api)
    page = f"/console/admin/accounts/{target.id}"
    cases = [
        ("recharge", {"money": "lots", "credits": "5"}, "Not a money amount"),
        ("recharge", {"money": "-3", "credits": "5"}, "must be positive"),
        ("credits", {"direction": "grant", "credits": "ten", "reason": "x"}, "whole number"),
        ("credits", {"direction": "grant", "credits": "5", "reason": " "}, "reason is required"),
        ("credits", {"direction": "deduct", "credits": "5", "reason": "x"}, "Cannot deduct"),
        ("credits", {"direction": "deduct", "credits": "-5", "reason": "x"}, "must be a positive"),
        ("credits", {"direction": "bogus", "credits": "5", "reason": "x"}, "grant or to deduct"),
        ("recharge", {"money": "10.123", "credits": "5"}, "at most two decimals"),
        ("recharge", {"money": "1e9", "credits": "5"}, "Not a money amount"),
        ("flags", {"concurrency_limit": "0"}, "from 1 to 1000000"),
        ("flags", {"concurrency_limit": "9" * 25}, "must be a whole number"),
        ("flags", {"concurrency_limit": "1000001"}, "from 1 to 1000000"),
        ("flags", {"concurrency_limit": "²"}, "must be a whole number"),
        ("credits", {"direction": "grant", "credits": "9" * 25, "reason": "x"}, "whole number"),
    ]
    for action, fields, message in cases:
        answer = await admin.submit(page, f"{page}/{action}", **fields)
        assert (answer.status_code, answer.headers["location"]) == (303, page), (action, fields)
        shown = await admin.get(page)
        assert message in shown.text, (action, shown.text[:300])
    assert await api.services.billing.balance(target.id) == 0
    assert await api.services.admin.audit_log(account_id=target.id) == []


async def test_accounts_can_be_searched(api: Api, browser_factory: Any) -> None:
    admin, _user = await admin_and_user(browser_factory)
    await api.services.accounts.create(email="someone.else@example.test")
    page = await admin.get("/console/admin/accounts", params={"q": "user@"})
    assert "user@example.test" in page.text
    assert "someone.else@example.test" not in page.text
    missing = await admin.get("/console/admin/accounts/nope")
    assert missing.status_code == 404


def checked(page: str, value: str) -> bool:
    """Whether the radio button of `value` is checked on the page."""
    match = re.search(rf'<input type="radio" name="direction" value="{value}"([^>]*)>', page)
    assert match, value
    return "checked" in match.group(1)


async def test_a_failed_deduct_comes_back_as_typed_once_and_a_reload_sends_nothing(
    api: Api, browser_factory: Any
) -> None:
    admin, user = await admin_and_user(browser_factory)
    target = await user.account(api)
    page = f"/console/admin/accounts/{target.id}"
    answer = await admin.submit(
        page, f"{page}/credits", direction="deduct", credits="7", reason="chargeback"
    )
    assert (answer.status_code, answer.headers["location"]) == (303, page)
    shown = (await admin.get(page)).text
    assert "Cannot deduct 7 credits: the balance is 0" in shown
    assert checked(shown, "deduct") and not checked(shown, "grant")
    assert 'name="credits" type="number" min="1" required value="7"' in shown
    assert 'name="reason" required maxlength="500" value="chargeback"' in shown
    # The other forms are not filled in with these values.
    assert 'id="recharge-credits" name="credits" type="number" min="0" required value=""' in shown
    # A reload is a plain GET of the page: no error, nothing kept, nothing sent.
    reloaded = (await admin.get(page)).text
    assert "Cannot deduct" not in reloaded and 'value="chargeback"' not in reloaded
    assert checked(reloaded, "grant")
    assert await api.services.billing.balance(target.id) == 0
    assert await api.services.admin.audit_log(account_id=target.id) == []
    # A failed access form keeps its boxes as they were posted.
    await admin.submit(page, f"{page}/flags", is_pro="on", concurrency_limit="0")
    shown = (await admin.get(page)).text
    assert "from 1 to 1000000" in shown
    assert '<input type="checkbox" name="is_pro" checked>' in shown
    assert '<input type="checkbox" name="api_access" >' in shown
    assert 'name="concurrency_limit" type="number" min="1" value="0"' in shown


async def test_a_flash_from_another_session_or_tampered_with_is_ignored(
    api: Api, browser_factory: Any
) -> None:
    admin, user = await admin_and_user(browser_factory)
    target = await user.account(api)
    page = f"/console/admin/accounts/{target.id}"
    answer = await admin.submit(
        page, f"{page}/credits", direction="deduct", credits="7", reason="x"
    )
    flash = answer.cookies[FLASH_COOKIE]

    async def page_with(browser: Any, value: str) -> str:
        session = browser.client.cookies.get(SESSION_COOKIE)
        cookie = f"{SESSION_COOKIE}={session}; {FLASH_COOKIE}={value}"
        return (await browser.get(page, headers={"cookie": cookie})).text  # type: ignore[no-any-return]

    # The same admin in a second browser: its own session, so the flash does not verify.
    other = browser_factory()
    signed_in = await other.submit(
        "/console/signin", "/console/signin", email="admin@example.test", password=PASSWORD
    )
    assert signed_in.status_code == 303
    assert "Cannot deduct" not in await page_with(other, flash)
    encoded, _, signature = flash.partition(".")
    forged = encoded[:-4] + "AAAA" + "." + signature
    assert "Cannot deduct" not in await page_with(admin, forged)
    assert "Cannot deduct" in await page_with(admin, flash)


@SMALL_PAGES
async def test_the_audit_log_reads_in_words_filters_and_pages(
    api: Api, browser_factory: Any
) -> None:
    admin = await browser_factory.signed_up("admin@example.test", admin=True)
    user = await browser_factory.signed_up("user@example.test")
    target = await user.account(api)
    page = f"/console/admin/accounts/{target.id}"
    await admin.submit(page, f"{page}/credits", direction="grant", credits="50", reason="promo")
    await admin.submit(page, f"{page}/flags", api_access="on", concurrency_limit="3")
    await admin.submit(page, f"{page}/credits", direction="deduct", credits="5", reason="fix")
    log = (await admin.get("/console/admin/audit")).text
    assert "credits -5 (reason: fix)" in log
    assert "API access: off → on, concurrency limit: default → 3" in log
    assert f'href="/console/admin/accounts/{target.id}">user@example.test</a>' in log
    assert "{" not in log.split("<tbody>")[1]  # no raw JSON
    # Two a page, newest first: deduct + update, then grant + first admin.
    assert log.count('data-testid="audit-entry"') == 2
    next_link = re.search(r'href="(/console/admin/audit\?[^"]+)" rel="next"', log)
    assert next_link, log
    older = (await admin.get(html.unescape(next_link.group(1)))).text
    assert "(reason: promo)" in older and "admin, API access on, credits +100" in older
    assert 'rel="next"' not in older and "First page" in older
    # Filters: by a part of the account's email, and by action; kept across pages.
    only_user = (await admin.get("/console/admin/audit", params={"account": "user@"})).text
    assert only_user.count('data-testid="audit-entry"') == 2 and "credits +100" not in only_user
    link = re.search(r'href="(/console/admin/audit\?[^"]+)" rel="next"', only_user)
    assert link and "account=user%40" in link.group(1)
    by_id = (await admin.get("/console/admin/audit", params={"account": target.id})).text
    assert by_id.count('data-testid="audit-entry"') == 2
    grants = (await admin.get("/console/admin/audit", params={"action": "grant"})).text
    assert grants.count('data-testid="audit-entry"') == 1 and "(reason: promo)" in grants
    assert '<option value="grant" selected>' in grants
    nothing = (await admin.get("/console/admin/audit", params={"account": "nobody"})).text
    assert "Nothing yet." in nothing


@SMALL_PAGES
async def test_the_accounts_list_pages_and_sorts_past_one_page(
    api: Api, browser_factory: Any
) -> None:
    admin = await browser_factory.signed_up("admin@example.test", admin=True)  # 100 credits
    for number, credits in ((1, 5), (2, 500), (3, 0), (4, 5)):
        account = await api.services.accounts.create(email=f"member{number}@example.test")
        if credits:
            await api.services.billing.grant(account.id, credits, reason="test")
    every = await api.services.accounts.list()
    name = {a.id: a.email.split("@")[0] for a in every}
    expected = {  # ties (two balances of 5) broken by id, the way the pages do
        "email": ["admin", "member1", "member2", "member3", "member4"],
        "balance": [name[a.id] for a in sorted(every, key=lambda a: (a.balance, a.id))][::-1],
        "created": [name[a.id] for a in sorted(every, key=lambda a: (a.created_at, a.id))][::-1],
    }
    assert expected["balance"][:2] == ["member2", "admin"]
    assert expected["created"][0] == "member4"
    for sort, names in expected.items():
        seen: list[str] = []
        path: str | None = f"/console/admin/accounts?sort={sort}"
        while path:
            shown = (await admin.get(path)).text
            rows = re.findall(ROW, shown)
            assert 1 <= len(rows) <= 2, shown
            seen += rows
            found = re.search(r'href="(/console/admin/accounts\?[^"]+)" rel="next"', shown)
            path = html.unescape(found.group(1)) if found else None
            assert path is None or f"sort={sort}" in path
        assert seen == names, sort
    # The search stays on the next page.
    shown = (
        await admin.get("/console/admin/accounts", params={"q": "member", "sort": "email"})
    ).text
    found = re.search(r'href="(/console/admin/accounts\?[^"]+)" rel="next"', shown)
    assert found and "q=member" in found.group(1)
    assert re.findall(ROW, shown) == ["member1", "member2"]
    assert (await admin.get("/console/admin/accounts?sort=bogus")).status_code == 200


async def test_unknown_console_urls_show_the_navigation_and_one_heading(
    api: Api, browser_factory: Any
) -> None:
    admin = await browser_factory.signed_up("admin@example.test", admin=True)
    missing = await admin.get("/console/no/such/page")
    assert missing.status_code == 404
    assert 'aria-label="Console"' in missing.text and "admin@example.test" in missing.text
    assert missing.text.count("<h1") == 1 and "no console page at this address" in missing.text
    assert missing.headers["content-security-policy"].startswith("default-src 'self'")
    stranger = browser_factory()
    anonymous = await stranger.get("/console/no/such/page")
    assert anonymous.status_code == 404
    assert 'aria-label="Console"' not in anonymous.text and anonymous.text.count("<h1") == 1
    # The API keeps answering JSON.
    assert (await api.client.get("/api/v1/nothing")).json()["type"] == "not_found"


async def test_times_are_time_elements_in_utc(api: Api, browser_factory: Any) -> None:
    admin = await browser_factory.signed_up("admin@example.test", admin=True)
    shown = (await admin.get("/console/settings/account")).text
    assert re.search(
        r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">\d{4}-\d\d-\d\d \d\d:\d\d UTC</time>',
        shown,
    )
    aware = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=9)))
    assert str(when(aware)) == ('<time datetime="2026-03-01T00:30:00Z">2026-03-01 00:30 UTC</time>')
    assert str(when(datetime(2026, 3, 1, 0, 30))) == str(when(aware))  # naive: UTC


def test_audit_changes_read_in_words() -> None:
    assert describe("grant", {"credits": 50, "reason": "promo"}) == "credits +50 (reason: promo)"
    assert describe("deduct", {"credits": -1200, "reason": ""}) == "credits -1,200"
    assert (
        describe(
            "recharge",
            {
                "money": "1000.00",
                "currency": "CNY",
                "credits": 500,
                "note": "",
                "api_access_enabled": True,
            },
        )
        == "recharge 1000.00 CNY, credits +500; API access: off → on"
    )
    # Entries from before the previous values were kept still read.
    assert describe("update", {"api_access": True, "concurrency_limit": "default"}) == (
        "API access: → on, concurrency limit: → default"
    )
    assert describe("create_key", {"prefix": "nb_abc1234"}) == "key nb_abc1234…"
    assert describe("set_password", {}) == ""
    assert describe("something_new", {"a": 1}) == "a: 1"
