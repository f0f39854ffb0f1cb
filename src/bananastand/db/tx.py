"""One transaction (`Tx`) and the statements hot paths run in it (`Query`).

A `Query` is a SQLAlchemy Core statement compiled once per dialect and run
straight on the driver's cursor, with SQLAlchemy's own type processors applied
to parameters and results. It answers plain tuples (or `into(*row)`), without
the ORM's or even Core's per-execution machinery: on the hot paths (auth,
admission, settlement, polling) that machinery cost ten times the query itself.

Everything else uses `tx.session`, an ORM session on the same connection and
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, overload

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

T = TypeVar("T")
Row = tuple[Any, ...]
_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: bool
    names: tuple[str, ...]
    defaults: dict[str, Any]
    required: frozenset[str]
    binds: tuple[_Processor, ...]
    results: tuple[_Processor, ...]
    any_result_processor: bool


class Query(Generic[T]):
    """A Core statement for hot paths. `into` builds each row's object (default: the
    tuple itself); parameters are the statement's `bindparam` names."""

    __slots__ = ("_compiled", "into", "statement")

    def __init__(self, statement: ClauseElement, into: Callable[..., T] | None = None) -> None:
        self.statement = statement
        self.into = into
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _compile(self.statement, dialect)
        return found


def _compile(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
    if compiled.post_compile_params:
        raise ValueError("a Query takes no expanding IN parameters: write `a == x | a == y`")
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.params)
    binds: list[_Processor] = []
    for name in names:
        bind = compiled.binds.get(name)
        binds.append(
            bind.type.dialect_impl(dialect).bind_processor(dialect) if bind is not None else None
        )
    columns: Sequence[Any] = (
        getattr(statement, "selected_columns", None)
        or getattr(statement, "exported_columns", None)
        or ()
    )
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    )
    return _Compiled(
        sql=str(compiled),
        positional=positional,
        names=names,
        defaults=dict(compiled.params),
        required=frozenset(name for name, bind in compiled.binds.items() if bind.required),
        binds=tuple(binds),
        results=results,
        any_result_processor=any(p is not None for p in results),
    )


class Tx:
    """A transaction in progress: `Query`s on the driver's cursor, and `session` (ORM)
    on the same connection. Made and committed by `Database.read` / `Database.write`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect
        self._session: Session | None = None
        self._cursor: Any = None

    @property
    def session(self) -> Session:
        if self._session is None:
            if not self.connection.in_transaction():
                # Join the transaction `Database` began on the driver (SQLite inline):
                # the session then neither commits nor rolls back on its own.
                self.connection.begin()
            self._session = Session(bind=self.connection, expire_on_commit=False)
        return self._session

    def finish(self) -> None:
        """Write what the session holds and let go of it (before the commit)."""
        if self._session is not None:
            self._session.flush()
            self._session.close()
            self._session = None
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def abandon(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def _execute(self, query: Query[Any], params: dict[str, Any]) -> tuple[Any, _Compiled]:
        if self._session is not None and (self._session.new or self._session.dirty):
            self._session.flush()  # what the ORM holds is visible to the query
        compiled = query.compiled(self.dialect)
        if not compiled.required.issubset(params):
            raise TypeError(f"missing parameters: {sorted(compiled.required - set(params))}")
        values = compiled.defaults | params if compiled.defaults else params
        if compiled.positional:
            bound: Any = tuple(
                value if proc is None else proc(value)
                for proc, value in zip(
                    compiled.binds, (values[n] for n in compiled.names), strict=True
                )
            )
        else:
            bound = {
                name: value if proc is None else proc(value)
                for name, proc, value in zip(
                    compiled.names,
                    compiled.binds,
                    (values[n] for n in compiled.names),
                    strict=True,
                )
            }
        if self._cursor is None:
            self._cursor = self.connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            self._cursor.execute(compiled.sql, bound)
        except self.dialect.loaded_dbapi.Error as exc:
            # As SQLAlchemy would raise it (DataError, IntegrityError, …): one error
            # handling whichever way a statement ran.
            raise DBAPIError.instance(
                compiled.sql, bound, exc, self.dialect.loaded_dbapi.Error, dialect=self.dialect
            ) from exc
        return self._cursor, compiled

    def _row(self, compiled: _Compiled, row: Row, into: Callable[..., T] | None) -> Any:
        if compiled.any_result_processor:
            row = tuple(
                value if proc is None or value is None else proc(value)
                for proc, value in zip(compiled.results, row, strict=False)
            )
        return row if into is None else into(*row)

    @overload
    def all(self, query: Query[T], **params: Any) -> list[T]: ...
    @overload
    def all(self, query: Query[Any], **params: Any) -> list[Any]: ...
    def all(self, query: Query[Any], **params: Any) -> list[Any]:
        cursor, compiled = self._execute(query, params)
        return [self._row(compiled, row, query.into) for row in cursor.fetchall()]

    def one(self, query: Query[T], **params: Any) -> T | None:
        """The first row (or None)."""
        cursor, compiled = self._execute(query, params)
        row = cursor.fetchone()
        if row is None:
            return None
        if cursor.description is not None:
            cursor.fetchall()  # finish the statement
        return self._row(compiled, row, query.into)  # type: ignore[no-any-return]

    def scalar(self, query: Query[Any], **params: Any) -> Any:
        """The first column of the first row (or None)."""
        cursor, compiled = self._execute(query, params)
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.fetchall()
        value = row[0]
        proc = compiled.results[0] if compiled.results else None
        return value if proc is None or value is None else proc(value)

    def run(self, query: Query[Any], **params: Any) -> int:
        """Execute a statement that answers no rows; returns the rows it changed."""
        cursor, _compiled = self._execute(query, params)
        return int(cursor.rowcount)
