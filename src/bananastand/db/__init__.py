"""Database access: every piece of work is a plain function run as one transaction.

    balance = await db.write(lambda tx: billing.charge(tx, account_id, 3))

`Database.write(work)` runs `work(tx)` (see `tx.Tx`) in a write transaction that
serialises with every other writer (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the
work locks the rows it changes, `SELECT … FOR UPDATE`), and commits it;
`read(work)` runs it in a read transaction. Work is synchronous, so a
transaction can never wait on the network (or on anything else) while it holds
locks.

Where work runs:
- SQLite (the embedded default): inline, on the event loop's own thread. A point
  lookup costs microseconds, less than any hand-off to another thread, and no
  two transactions of the process ever interleave. WAL checkpoints (the only
  slow part of a commit) run on a background thread instead of inside commits.
- PostgreSQL: on a pool of threads, one pooled connection each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import NullPool, StaticPool

from bananastand.db.models import Base
from bananastand.db.tx import Query, Tx

__all__ = ["Base", "Database", "Query", "Tx", "sync_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[Tx], T]

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x62616E61  # "bana": the advisory lock migrations hold on PostgreSQL
_BUSY_TIMEOUT_MS = 10_000  # waiting for another process's write lock (the admin CLI)
_CHECKPOINT_EVERY = 500  # commits between background WAL checkpoints


def _end(connection: Connection, raw: Any, *, commit: bool) -> None:
    """End an inline SQLite transaction, whether or not SQLAlchemy joined it."""
    if connection.in_transaction():
        (connection.commit if commit else connection.rollback)()
    if raw.in_transaction:
        raw.execute("COMMIT" if commit else "ROLLBACK")


def sync_url(url: str) -> str:
    """The URL with the driver this module runs on: the standard library's sqlite3,
    or psycopg (3) for PostgreSQL. Async driver names in settings are accepted."""
    scheme, sep, rest = url.partition("://")
    dialect = scheme.split("+", 1)[0]
    if dialect == "sqlite":
        return f"sqlite{sep}{rest}"
    if dialect in ("postgresql", "postgres"):
        return f"postgresql+psycopg{sep}{rest}"
    return url


def _sqlite_engine(url: str) -> Engine:
    # One connection, used only from the event loop's thread (StaticPool).
    engine = create_engine(
        url, poolclass=StaticPool, connect_args={"check_same_thread": False, "timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver: `Database` issues BEGIN and COMMIT itself.
        dbapi_connection.isolation_level = None
        for pragma in (
            "journal_mode=WAL",
            f"busy_timeout={_BUSY_TIMEOUT_MS}",
            "foreign_keys=ON",
            "synchronous=NORMAL",
            "wal_autocheckpoint=0",  # checkpoints run on a background thread
        ):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    return engine


class Database:
    def __init__(self, url: str, *, threads: int = 16) -> None:
        self.url = sync_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._threads: ThreadPoolExecutor | None = None
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            self.path = Path(path) if path and path != ":memory:" else None
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(self.url)
            self.read_engine = _sqlite_engine(self.url)
            self._writer: Connection | None = None
            self._reader: Connection | None = None
        else:
            self.path = None
            self.engine = create_engine(self.url, pool_size=threads, max_overflow=4)
            self.read_engine = self.engine
            self._threads = ThreadPoolExecutor(threads, thread_name_prefix="db")
        self._commits = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # SQLite: the inline connections are the loop's

    # --- running work ------------------------------------------------------------
    async def write(self, work: Work[T]) -> T:
        """Run `work(tx)` in a write transaction and commit it."""
        if self._threads is None:
            result = self._inline(work, write=True)
            self._commits += 1
            if self._commits % _CHECKPOINT_EVERY == 0:
                self._checkpoint_soon()
            return result
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._pooled, work)

    async def read(self, work: Work[T]) -> T:
        """Run `work(tx)` in a read transaction (a consistent snapshot)."""
        if self._threads is None:
            return self._inline(work, write=False)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._pooled, work)

    async def fetch(self, query: Query[T], **params: Any) -> list[T]:
        """The rows of one statement. SQLite runs it alone (a statement is atomic by
        itself: no BEGIN and COMMIT around it); the hottest reads come here."""
        if self._threads is None:
            with self._lock:
                connection = self._connection(False)
                if connection.in_transaction():
                    connection.rollback()  # an ORM read left it open: start clean
                tx = Tx(connection)
                try:
                    return tx.all(query, **params)
                finally:
                    tx.finish()
        return await self.read(lambda tx: tx.all(query, **params))

    async def read_heavy(self, work: Work[T]) -> T:
        """`read`, for work that scans much (exports, reconciliation): never inline."""
        if self._threads is None:
            return await asyncio.to_thread(self._scan, work)
        return await self.read(work)

    def _scan(self, work: Work[T]) -> T:
        engine = create_engine(
            self.url, poolclass=NullPool, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000}
        )
        try:
            with engine.connect() as connection:
                tx = Tx(connection)
                with connection.begin():
                    result = work(tx)
                    tx.finish()
                return result
        finally:
            engine.dispose()

    def _inline(self, work: Work[T], *, write: bool) -> T:
        # The transaction is begun and ended on the driver itself: SQLAlchemy's own
        # transaction bookkeeping would cost more than a point lookup. An ORM session
        # used inside joins it (the driver is in autocommit mode, so SQLAlchemy's
        # "begin" issues nothing; its commit or rollback ends this transaction).
        with self._lock:
            connection = self._connection(write)
            raw = connection.connection.driver_connection
            assert raw is not None  # a live pooled connection always has its driver's
            tx = Tx(connection)
            raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(tx)
                tx.finish()
            except BaseException:
                tx.abandon()
                _end(connection, raw, commit=False)
                raise
            _end(connection, raw, commit=write)
            return result

    def _connection(self, write: bool) -> Connection:
        if write:
            if self._writer is None or self._writer.closed:
                self._writer = self.engine.connect()
            return self._writer
        if self._reader is None or self._reader.closed:
            self._reader = self.read_engine.connect()
        return self._reader

    def _pooled(self, work: Work[T]) -> T:
        with self.engine.connect() as connection:
            tx = Tx(connection)
            try:
                with connection.begin():
                    result = work(tx)
                    tx.finish()
                return result
            except BaseException:
                tx.abandon()
                raise

    # --- SQLite's WAL ------------------------------------------------------------------
    def _checkpoint_soon(self) -> None:
        if self.path is None or (self._checkpointing and not self._checkpointing.done()):
            return
        self._checkpointing = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.checkpoint)
        )

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (without blocking writers)."""
        if self.path is None:
            return
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=1)) as connection:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.debug("WAL checkpoint skipped", exc_info=True)

    # --- schema and lifecycle ------------------------------------------------------------
    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        if self._threads is None:
            self._migrate()
        else:
            await asyncio.get_running_loop().run_in_executor(self._threads, self._migrate)

    def _migrate(self) -> None:
        engine = create_engine(self.url, poolclass=StaticPool if self.is_sqlite else None)
        try:
            with engine.connect() as conn:
                if _revision(conn) == _head_revision():
                    return  # up to date: no need to load Alembic at all
            with engine.begin() as conn:
                if not self.is_sqlite:
                    # Processes starting together take turns (SQLite locks the file itself).
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                _upgrade(conn)
        finally:
            engine.dispose()

    async def ping(self) -> None:
        await self.read(lambda tx: tx.connection.exec_driver_sql("SELECT 1").scalar())

    async def close(self) -> None:
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        for connection in (getattr(self, "_writer", None), getattr(self, "_reader", None)):
            if connection is not None:
                connection.close()
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        else:
            self.checkpoint()


def _head_revision() -> str:
    """The newest migration's revision (revision ids are the files' number prefixes)."""
    return max(p.name.split("_", 1)[0] for p in (_MIGRATIONS / "versions").glob("[0-9]*.py"))


def _revision(connection: Connection) -> str | None:
    try:
        with connection.begin_nested() if connection.in_transaction() else connection.begin():
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # no schema yet
        return None


def alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", sync_url(url))
    return cfg


def _upgrade(connection: Connection) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
