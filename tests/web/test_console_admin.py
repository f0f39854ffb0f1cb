"""Admin pages: only admins get in; every change they make is in the audit log."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api


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
    assert await api.services.admin.audit_log() == []


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
    entry = (await api.services.admin.audit_log())[0]
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
    log = await api.services.admin.audit_log()
    assert [(e.action, e.details) for e in reversed(log)] == [
        ("grant", {"credits": 30, "reason": "promo"}),
        ("deduct", {"credits": -5, "reason": "fix"}),
        ("update", {"api_access": True, "is_pro": True, "concurrency_limit": 4}),
    ]
    audit = await admin.get("/console/admin/audit")
    assert audit.text.count("admin@example.test") >= 3
    # Saving the form unchanged changes (and logs) nothing.
    await admin.submit(page, f"{page}/flags", api_access="on", is_pro="on", concurrency_limit="4")
    assert len(await api.services.admin.audit_log()) == 3


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
        assert answer.status_code in (400, 402), (action, fields)
        assert message in answer.text, (action, answer.text[:300])
    assert await api.services.billing.balance(target.id) == 0
    assert await api.services.admin.audit_log() == []


async def test_accounts_can_be_searched(api: Api, browser_factory: Any) -> None:
    admin, _user = await admin_and_user(browser_factory)
    await api.services.accounts.create(email="someone.else@example.test")
    page = await admin.get("/console/admin/accounts", params={"q": "user@"})
    assert "user@example.test" in page.text
    assert "someone.else@example.test" not in page.text
    missing = await admin.get("/console/admin/accounts/nope")
    assert missing.status_code == 404
