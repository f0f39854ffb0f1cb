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
    await Database(f"sqlite+aiosqlite:///{path}").migrate()
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
    from tests.conftest import create_database, drop_database, pg_url

    name = create_database(pg_template)
    try:
        engine = create_engine(pg_url(name))
        with engine.connect() as connection:
            diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        engine.dispose()
    finally:
        drop_database(name)
    assert [d for d in diffs if _ours(d)] == []
