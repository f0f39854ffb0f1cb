"""The admin CLI, as an operator types it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bananastand.server_cli import app


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {"BANANASTAND_DATA_DIR": str(tmp_path / "data"), "BANANASTAND_DEMO_ACCOUNT": "false"}

    def invoke(*args: str, ok: bool = True):  # type: ignore[no-untyped-def]
        result = runner.invoke(app, list(args), env=env)
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return result

    return invoke


def test_account_lifecycle(run) -> None:  # type: ignore[no-untyped-def]
    created = run("admin", "create-account", "ops@example.com", "--credits", "5")
    assert "credits: 5" in created.output
    assert "api access: off" in created.output
    run("admin", "create-account", "ops@example.com", ok=False)

    recharged = run("admin", "recharge", "ops@example.com", "999.99", "--credits", "1000")
    assert "api access: off" in recharged.output
    assert "credits: 1005" in recharged.output
    recharged = run("admin", "recharge", "ops@example.com", "0.01", "--credits", "0")
    assert "api access: on" in recharged.output  # 1000 CNY reached

    assert (
        "credits: 1015"
        in run("admin", "grant", "ops@example.com", "10", "--reason", "promo").output
    )
    assert (
        "credits: 1000" in run("admin", "deduct", "ops@example.com", "15", "--reason", "fix").output
    )
    run("admin", "deduct", "ops@example.com", "5000", "--reason", "too much", ok=False)
    run("admin", "grant", "ops@example.com", "10", ok=False)  # reason required

    assert "api access: off" in run("admin", "api-access", "ops@example.com", "off").output
    assert "api access: on" in run("admin", "api-access", "ops@example.com", "on").output
    assert "concurrency limit: 3" in run("admin", "set-limit", "ops@example.com", "3").output
    assert "(default)" in run("admin", "set-limit", "ops@example.com", "default").output
    for bad, says in (
        ("0", "from 1 to 1000000"),
        ("9" * 25, "from 1 to 1000000"),
        ("²", "use a whole number"),
        ("3.5", "use a whole number"),
    ):
        refused = run("admin", "set-limit", "ops@example.com", bad, ok=False)
        assert says in refused.output and "Traceback" not in refused.output
    huge = run("admin", "ledger", "ops@example.com", "--limit", "9" * 25, ok=False)
    assert "less than or equal to 100000" in huge.output and "Traceback" not in huge.output
    assert "pro: yes" in run("admin", "pro", "ops@example.com", "on").output

    ledger = run("admin", "ledger", "ops@example.com").output
    assert "balance: 1000" in ledger
    for reason in ("recharge", "grant", "deduct"):
        assert reason in ledger
    assert "ops@example.com" in run("admin", "list-accounts").output
    run("admin", "show", "nobody@example.com", ok=False)


def test_keys_are_printed_once_listed_by_prefix_and_revocable(run) -> None:  # type: ignore[no-untyped-def]
    run("admin", "create-account", "dev@example.com", "--api-access")
    created = run("admin", "create-key", "dev@example.com", "--name", "laptop")
    secret = re.search(r"nb_[A-Za-z0-9_-]+", created.stdout).group(0)  # type: ignore[union-attr]
    listing = run("admin", "list-keys", "dev@example.com").output
    assert secret not in listing
    assert secret[:10] in listing
    assert "laptop" in listing
    key_id = listing.split()[0]
    assert "revoked" in run("admin", "revoke-key", key_id).output
    assert "(no keys)" in run("admin", "list-keys", "dev@example.com").output
    assert "REVOKED" in run("admin", "list-keys", "dev@example.com", "--all").output
    for _ in range(5):
        run("admin", "create-key", "dev@example.com")
    assert "at most 5" in run("admin", "create-key", "dev@example.com", ok=False).output


def test_operator_actions_are_audited_and_a_password_opens_the_console(  # type: ignore[no-untyped-def]
    run, tmp_path: Path
) -> None:
    import asyncio

    from bananastand.config import Settings
    from bananastand.container import Services

    run("admin", "create-account", "ops@example.com", "--admin")
    run("admin", "recharge", "ops@example.com", "10", "--credits", "10", "--note", "invoice 7")
    run("admin", "grant", "ops@example.com", "5", "--reason", "goodwill")
    run("admin", "deduct", "ops@example.com", "2", "--reason", "correction")
    run("admin", "pro", "ops@example.com", "on")
    run("admin", "set-limit", "ops@example.com", "3")
    short = CliRunner().invoke(
        app,
        ["admin", "set-password", "ops@example.com"],
        input="short\nshort\n",
        env={"BANANASTAND_DATA_DIR": str(tmp_path / "data")},
    )
    assert short.exit_code != 0 and "at least 8" in short.output
    done = CliRunner().invoke(
        app,
        ["admin", "set-password", "ops@example.com"],
        input="a long password\na long password\n",
        env={"BANANASTAND_DATA_DIR": str(tmp_path / "data")},
    )
    assert done.exit_code == 0, done.output
    assert "a long password" not in done.output

    async def check() -> None:
        services = Services.build(Settings(_env_file=None, data_dir=tmp_path / "data"))  # type: ignore[call-arg]
        await services.start("cli")
        try:
            log = await services.admin.audit_log()
            actions = [(entry.actor, entry.action) for entry in reversed(log)]
            assert actions == [
                ("cli", "create_account"),
                ("cli", "recharge"),
                ("cli", "grant"),
                ("cli", "deduct"),
                ("cli", "update"),
                ("cli", "update"),
                ("cli", "set_password"),
            ]
            assert log[1].details == {"concurrency_limit": 3, "was": {"concurrency_limit": None}}
            assert log[-2].details["note"] == "invoice 7"
            token, signed = await services.console_auth.sign_in(
                email="ops@example.com", password="a long password", ip="127.0.0.1"
            )
            assert signed.account.is_admin and token
        finally:
            await services.stop()

    asyncio.run(check())


def test_admin_commands_refuse_a_folder_without_the_servers_data(run) -> None:  # type: ignore[no-untyped-def]
    missing = run("admin", "create-key", "demo@bananastand.local", ok=False)
    assert "no database at" in missing.output
    assert "BANANASTAND_DATA_DIR" in missing.output
    run("admin", "create-account", "first@example.com")  # may start a new database
    assert "first@example.com" in run("admin", "list-accounts").output


def test_reconcile_passes_on_honest_books_and_names_a_tampered_account(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"BANANASTAND_DATA_DIR": str(tmp_path / "data"), "BANANASTAND_DEMO_ACCOUNT": "false"}

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    assert run("admin", "create-account", "honest@example.com", "--credits", "9")[0] == 0
    assert run("admin", "create-account", "tampered@example.com", "--credits", "4")[0] == 0
    assert run("admin", "deduct", "tampered@example.com", "1", "--reason", "fee")[0] == 0
    code, output = run("admin", "reconcile")
    assert code == 0, output
    assert "all 2 accounts reconcile" in output

    from sqlalchemy import create_engine, update

    from bananastand.db.models import Account

    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'bananastand.db'}")
    with engine.begin() as connection:
        connection.execute(
            update(Account).where(Account.email == "tampered@example.com").values(balance=1000)
        )
    engine.dispose()
    code, output = run("admin", "reconcile")
    assert code == 1
    assert re.search(r"MISMATCH tampered@example\.com .*balance 1000, ledger sum 3", output)
    assert "honest@example.com" not in output


def test_the_client_commands_default_to_the_clients_base_url() -> None:
    from bananastand import client, client_cli

    assert client_cli.DEFAULT_BASE_URL == client.DEFAULT_BASE_URL


def test_server_logs_keep_http_clients_and_the_google_sdk_quiet() -> None:
    """Their INFO lines carry full URLs (a gateway base URL may hold credentials)
    or say the same thing on every call."""
    import logging

    from bananastand.server_cli import _configure_logging

    _configure_logging("info")
    for name in ("httpx", "httpcore", "httpx2", "google_genai.models", "google_genai.chats"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
