"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from bananastand.db import Base, Database


def _ours(diff: Any) -> bool:
    """Differences that matter: procrastinate's tables (PostgreSQL) are not ours."""
    item = diff[0] if isinstance(diff, list) else diff
    for part in item:
        name = getattr(part, "name", "") or ""
        if isinstance(name, str) and name.startswith("procrastinate"):
            return False
        table = getattr(part, "table", None)
        if table is not None and str(table.name).startswith("procrastinate"):
            return False
    return True


async def test_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    path = tmp_path / "schema.sqlite3"
    database = Database(f"sqlite:///{path}")
    await database.migrate()
    await database.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        # Types are compared on PostgreSQL (below): SQLite's INTEGER is already 64-bit,
        # so the BIGINT migration only runs there.
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        diffs = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert [d for d in diffs if _ours(d)] == []


@pytest.mark.usefixtures("pg_template")
def test_postgresql_schema_matches_the_models(pg_template: str) -> None:
    from tests.support import create_database, drop_database, pg_url

    name = create_database(pg_template)
    try:
        engine = create_engine(pg_url(name))
        with engine.connect() as connection:
            diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        engine.dispose()
    finally:
        drop_database(name)
    assert [d for d in diffs if _ours(d)] == []


# --- 0006: balances kept beside the ledger ------------------------------------------
_LEDGERS = {"a1": [100, -3, 1, -5], "a2": [7], "a3": []}
# 0007: the slots each account holds, counted from its generations in progress.
_GENERATIONS = [("a1", "queued"), ("a1", "running"), ("a1", "completed"), ("a2", "failed")]


def _seed_before_balances(url: str) -> None:
    """A database as revision 0005 left it, with accounts and ledger rows."""
    from alembic import command
    from sqlalchemy import text

    from bananastand.db import alembic_config

    engine = create_engine(url)
    with engine.begin() as connection:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0005")
    with engine.begin() as connection:
        for account, amounts in _LEDGERS.items():
            connection.execute(
                text(
                    "INSERT INTO accounts (id, email, display_name, api_access, is_pro, "
                    "is_admin, created_at) VALUES (:id, :email, '', true, false, false, "
                    "CURRENT_TIMESTAMP)"
                ),
                {"id": account, "email": f"{account}@example.test"},
            )
            for amount in amounts:
                connection.execute(
                    text(
                        "INSERT INTO ledger_entries (account_id, amount, reason, note, "
                        "created_at) VALUES (:account, :amount, 'grant', '', CURRENT_TIMESTAMP)"
                    ),
                    {"account": account, "amount": amount},
                )
        for number, (account, state) in enumerate(_GENERATIONS):
            connection.execute(
                text(
                    "INSERT INTO generations (id, account_id, prompt, model, mode, "
                    "aspect_ratio, quantity, reference_urls, seed, attempts, state, unit_cost, "
                    "credits_charged, credits_used, created_at) VALUES (:id, :account, 'x', "
                    "'nano-banana', 'async', 'default', 1, '[]', 1, 0, :state, 1, 1, 1, "
                    "CURRENT_TIMESTAMP)"
                ),
                {"id": f"g{number}", "account": account, "state": state},
            )
    engine.dispose()


async def _assert_balances_moved(url: str) -> None:
    from sqlalchemy import text

    database = Database(url)
    await database.migrate()
    await database.close()
    engine = create_engine(url)
    with engine.connect() as connection:
        balances = dict(connection.execute(text("SELECT id, balance FROM accounts")).all())
        assert balances == {a: sum(amounts) for a, amounts in _LEDGERS.items()}
        slots = dict(connection.execute(text("SELECT id, active_generations FROM accounts")).all())
        assert slots == {"a1": 2, "a2": 0, "a3": 0}
        for account, amounts in _LEDGERS.items():
            running = [
                row[0]
                for row in connection.execute(
                    text(
                        "SELECT balance_after FROM ledger_entries WHERE account_id = :a ORDER BY id"
                    ),
                    {"a": account},
                )
            ]
            assert running == [sum(amounts[: i + 1]) for i in range(len(amounts))]
    engine.dispose()


async def test_sqlite_migration_keeps_every_balance(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    _seed_before_balances(url)
    await _assert_balances_moved(url)


@pytest.mark.usefixtures("pg_template")
async def test_postgresql_migration_keeps_every_balance() -> None:
    import secrets

    from tests.support import drop_database, pg_admin, pg_url

    name = f"bs_test_old_{secrets.token_hex(4)}"
    pg_admin(f"CREATE DATABASE {name}")
    try:
        _seed_before_balances(pg_url(name))
        await _assert_balances_moved(pg_url(name))
    finally:
        drop_database(name)
