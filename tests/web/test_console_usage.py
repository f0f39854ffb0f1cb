"""Usage, the dashboard's recent activity and each key's figures, as pages."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any

from tests.support import Api
from tests.web.conftest import Browser
from tests.web.test_console_pages import create_key, enabled


async def make(api: Api, key: str, model: str, quantity: int = 1) -> str:
    answer = await api.client.post(
        "/api/v1/generate",
        headers={"Authorization": f"Bearer {key}"},
        json={"prompt": "a quince", "selectedModel": model, "quantity": quantity},
    )
    assert answer.status_code == 200 and answer.json()["success"], answer.text
    generation_id: str = answer.json()["generationId"]
    return generation_id


def rows(page: str, testid: str = "ledger-entry") -> list[dict[str, str]]:
    """The data attributes of each row marked `testid`."""
    found = re.findall(rf'<tr data-testid="{testid}"([^>]*)>', page)
    return [dict(re.findall(r'data-([a-z-]+)="([^"]*)"', attributes)) for attributes in found]


async def test_usage_lists_every_change_and_reconciles_with_the_balance(
    api: Api, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    await enabled(api, user, credits=50)
    key = await create_key(user, "laptop")
    first = await make(api, key, "nano-banana", quantity=3)
    await make(api, key, "nano-banana-sketch")

    page = await user.get("/console/usage")
    assert page.status_code == 200
    text = page.text
    entries = rows(text)
    assert [int(e["amount"]) for e in entries] == [-1, -3, 50]
    assert [int(e["balance"]) for e in entries] == [46, 47, 50]
    assert 'data-testid="usage-balance">46<' in text
    assert f'href="/console/generations/{first}"' in text
    assert "Generation charge" in text and "Credits granted" in text
    assert 'data-testid="credits-spent">4<' in text
    assert 'data-testid="images-made">4<' in text
    # The charts: a data point per model, with the legend and a table of the numbers.
    models = set(re.findall(r'<rect [^>]*data-model="([^"]+)"[^>]*data-credits="\d+"', text))
    assert models == {"nano-banana", "nano-banana-sketch"}
    assert len(re.findall(r'<rect [^>]*data-images="\d+"', text)) == 2
    assert 'role="img"' in text and "The numbers, day by day" in text
    assert re.search(r"laptop <code>nb_[\w-]+…</code></td><td class=\"num\">2</td>", text)
    assert 'href="/console/usage/ledger.csv"' in text
    assert " style=" not in text  # the CSP forbids inline styles
    # The dashboard's recent activity: the same entries, ending at the balance shown.
    dashboard = await user.get("/console")
    assert [int(e["balance"]) for e in rows(dashboard.text)] == [46, 47, 50]
    assert 'data-testid="balance">46<' in dashboard.text
    assert 'href="/console/usage">All usage' in dashboard.text
    assert "Recharge history" not in dashboard.text


async def test_the_ledger_pages_by_keyset_and_survives_a_mangled_cursor(
    api: Api, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    account = await user.account(api)
    for number in range(1, 53):  # 52 entries: a page of 50, then 2
        await api.services.billing.grant(account.id, number, reason=f"number {number}")
    first = await user.get("/console/usage?days=90")
    assert [int(e["amount"]) for e in rows(first.text)] == list(range(52, 2, -1))
    assert 'aria-current="page">Last 90 days' in first.text
    older = re.search(
        r'href="(/console/usage\?days=90&amp;before=\d+)#ledger" rel="next"', first.text
    )
    assert older, first.text
    second = await user.get(html.unescape(older.group(1)))
    assert [int(e["amount"]) for e in rows(second.text)] == [2, 1]
    assert 'rel="next"' not in second.text
    assert 'href="/console/usage?days=90#ledger">Newest' in second.text
    for bad in ("garbage", "-1", "0", "9" * 40):
        answer = await user.get(f"/console/usage?days=90&before={bad}")
        assert answer.status_code == 303, bad
        assert answer.headers["location"] == "/console/usage?days=90#ledger"
    # An unknown period: the shortest.
    assert 'aria-current="page">Last 30 days' in (await user.get("/console/usage?days=7")).text


async def test_the_csv_export_is_an_attachment_that_sums_to_the_balance(
    api: Api, browser_factory: Any
) -> None:
    user = await browser_factory.signed_up()
    other = await browser_factory.signed_up()
    await enabled(api, user, credits=40)
    await enabled(api, other, credits=7)
    account = await user.account(api)
    await api.services.billing.deduct(account.id, 5, reason="=cmd|' /C calc'!A0")
    key = await create_key(user)
    generation_id = await make(api, key, "nano-banana", quantity=2)

    answer = await user.get("/console/usage/ledger.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        r'attachment; filename="bananastand-ledger-\d{4}-\d\d-\d\d\.csv"',
        answer.headers["content-disposition"],
    )
    assert answer.headers["cache-control"] == "no-store"
    table = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["reason"] for r in table] == ["grant", "deduct", "generation"]
    assert (
        sum(int(r["amount"]) for r in table) == 33 == await api.services.billing.balance(account.id)
    )
    assert table[1]["note"] == "'=cmd|' /C calc'!A0"
    assert (table[2]["generation_id"], table[2]["model"]) == (generation_id, "nano-banana")
    # Only one's own ledger; signed out, the sign-in page.
    assert "7" not in [r["amount"] for r in table]
    anonymous = browser_factory()
    signed_out = await anonymous.get("/console/usage/ledger.csv")
    assert signed_out.status_code == 303
    assert signed_out.headers["location"].startswith("/console/signin")


async def test_nothing_to_show_yet_says_so(browser_factory: Any) -> None:
    user: Browser = await browser_factory.signed_up()
    page = await user.get("/console/usage")
    assert "No generations in the last 30 days" in page.text
    assert "No credits have moved yet" in page.text
    assert '<svg role="img"' not in page.text
    assert "No credits have moved yet" in (await user.get("/console")).text


async def test_keys_list_revoked_ones_greyed_with_their_use(api: Api, browser_factory: Any) -> None:
    user = await browser_factory.signed_up()
    await enabled(api, user, credits=50)
    old = await create_key(user, "old laptop")
    await create_key(user, "server")
    await make(api, old, "nano-banana", quantity=2)
    await make(api, old, "nano-banana-sketch")
    account = await user.account(api)
    old_key = next(
        k for k in await api.services.accounts.list_keys(account.id) if old.startswith(k.prefix)
    )
    await user.submit("/console/settings/keys", f"/console/settings/keys/{old_key.id}/revoke")

    page = (await user.get("/console/settings/keys")).text
    assert "No keys yet" not in page
    listed = re.findall(r'<tr data-testid="key" data-prefix="([\w-]+)"( class="revoked")?>', page)
    assert [(prefix, bool(revoked)) for prefix, revoked in listed][-1] == (old_key.prefix, True)
    assert len(listed) == 2
    revoked_row = page[page.index(f'data-prefix="{old_key.prefix}"') :].split("</tr>")[0]
    assert 'data-testid="key-credits">3<' in revoked_row
    assert 'data-testid="key-images">3<' in revoked_row
    assert 'data-testid="key-revoked">Revoked ' in revoked_row
    assert "<button" not in revoked_row  # nothing left to revoke
    server_row = page[page.index('data-testid="key" data-prefix=') :].split("</tr>")[0]
    assert "never" in server_row and 'data-testid="key-credits">0<' in server_row
    assert "Revoke key server" in server_row
    assert "1 of 5 keys in use" in page
