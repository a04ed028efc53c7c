"""One-statement reads of a SQLite catalog straight through `sqlite3` (`Catalog.read_once`).

The hot reads of small requests (the token of every request, HEAD of a blob, GET of a manifest) are
statements built once at import. Running one through SQLAlchemy (a pooled connection's checkout,
BEGIN, the cursor, the result object, the ROLLBACK of the check-in) cost 5 to 10 times as much as
the query itself. Here each such statement is compiled once per catalog to its SQL text, its
parameter order and its result types, and run on a connection this thread keeps open, in autocommit:
one statement, its own snapshot, as `read_once` promises. In WAL mode it never waits for a writer.

Only statements built once are taken (`reusable`): a statement made per request would be compiled
per request and kept. So are only reads without parameters expanded at execution (`IN` of a list).
While a test listens for the read engine's statements (`before_cursor_execute`: the statement hooks
that pin interleavings), every read goes through SQLAlchemy, so the hooks see them all.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelhangar.core.waits import may_wait

REUSABLE: set[int] = set()
_KEEP: list[Any] = []


def reusable(statement: Any) -> Any:
    """Mark a statement built once (at import) as one `Catalog.read_once` may compile and keep."""
    REUSABLE.add(id(statement))
    _KEEP.append(statement)  # never collected: its id stays its own
    return statement


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    names: list[str]
    """The parameters in the order the SQL takes them (a name used twice is there twice)."""
    fixed: dict[str, Any]
    """Values the statement carries itself (constants); every other parameter must be given."""
    row: Callable[..., Any]
    """Makes a row read by attribute, as SQLAlchemy's are (`row.size`): a named tuple."""
    processors: list[Any] | None
    """Result conversions per column (SQLite's booleans), None when no column has one."""

    def args(self, params: dict[str, Any]) -> list[Any]:
        """The parameters in the SQL's order (KeyError: one is missing)."""
        return [params[n] if n in params else self.fixed[n] for n in self.names]

    def convert(self, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.processors is None:
            return raw
        return tuple(v if p is None else p(v) for p, v in zip(self.processors, raw, strict=True))


_SEEN_MAX = 1024
"""Answers kept per thread for `first(..., reuse=True)`; past that many the thread starts over."""


def inline_literals(compiled: Any, dialect: Any) -> tuple[str, set[str]] | None:
    """The SQL of `compiled` with its fixed literals (a separator) rendered in, and their names; None
    if something is still left to render at execution."""
    sql: str = compiled.string
    names: set[str] = set()
    for bind in compiled.literal_execute_params:
        name = compiled.bind_names[bind]
        render = bind.type.literal_processor(dialect)
        if bind.callable is not None or bind.value is None or render is None:
            return None
        sql = sql.replace(f"__[POSTCOMPILE_{name}]", render(bind.value))
        names.add(name)
    return None if "POSTCOMPILE" in sql else (sql, names)


class QuickReads:
    """The compiled statements and the per-thread connections of one SQLite catalog file."""

    def __init__(self, path: str, engine: sa.Engine) -> None:
        self.path = path
        self.engine = engine
        self._prepared: dict[int, _Prepared | None] = {}
        self._local = threading.local()
        self._open: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self.closed = False

    def usable(self, statement: Any) -> bool:
        return id(statement) in REUSABLE and not self.engine.dispatch.before_cursor_execute

    def first(self, statement: Any, params: dict[str, Any], *, reuse: bool = False) -> Any:
        """The first row of `statement` (or None); `statement` must be `usable`. Returns NotImplemented
        for a statement this path does not take (the caller runs it through SQLAlchemy).

        `reuse`: answer from this thread's last read of the same statement and parameters while no
        connection, of this process or another, has committed anything to the catalog since
        (SQLite's `PRAGMA data_version`, which is per connection, hence per thread here): the answer
        is the one a new read would give, for the cost of one pragma."""
        prepared = self.prepared(statement)
        if prepared is None:
            return NotImplemented
        args = prepared.args(params)
        conn = self._connection()
        if conn is None:
            return NotImplemented
        try:
            if reuse:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                seen: dict[tuple[Any, ...], tuple[int, Any]] = self._local.__dict__.setdefault("seen", {})
                key = (id(statement), *args)
                hit = seen.get(key)
                if hit is not None and hit[0] == version:
                    return hit[1]
            cursor = conn.execute(prepared.sql, args)
            try:
                raw = cursor.fetchone()
            finally:
                cursor.close()
        except sqlite3.OperationalError as e:  # busy: rare in WAL mode (recovery after a crash)
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            may_wait("a busy catalog")  # on the loop: again on a thread; elsewhere: SQLAlchemy waits
            return NotImplemented
        row = None if raw is None else prepared.row(*prepared.convert(raw))
        if reuse:
            if len(seen) >= _SEEN_MAX:
                seen.clear()
            seen[key] = (version, row)
        return row

    def rows(
        self, conn: sa.Connection, statement: Any, params: dict[str, Any], batch: int
    ) -> Iterator[list[Any]] | None:
        """The rows of `statement` (which must be `usable`) as batches of plain tuples, read through
        the DBAPI cursor of `conn` in its snapshot (`Catalog.read`), with no result object and no
        row object; None for a statement this path does not take."""
        prepared = self.prepared(statement)
        if prepared is None:
            return None
        args = prepared.args(params)
        if not conn.in_transaction():
            conn.begin()  # the snapshot's BEGIN, as its first statement through SQLAlchemy would
        return self._batches(conn.connection.driver_connection, prepared, args, batch)

    @staticmethod
    def _batches(dbapi: Any, prepared: _Prepared, args: list[Any], batch: int) -> Iterator[list[Any]]:
        cursor = dbapi.cursor()
        try:
            cursor.execute(prepared.sql, args)
            while rows := cursor.fetchmany(batch):
                yield rows if prepared.processors is None else [prepared.convert(r) for r in rows]
        finally:
            cursor.close()

    def prepared(self, statement: Any) -> _Prepared | None:
        """`statement` compiled for this path (once), or None if it cannot take it."""
        key = id(statement)
        if key not in self._prepared:
            self._prepared[key] = self._prepare(statement)
        return self._prepared[key]

    def _prepare(self, statement: Any) -> _Prepared | None:
        dialect = self.engine.dialect
        compiled: Any = statement.compile(dialect=dialect)
        if compiled.positiontup is None or compiled.post_compile_params:
            return None  # a list expanded at execution
        inlined = inline_literals(compiled, dialect)
        if inlined is None:
            return None
        sql, literal = inlined
        names = [n for n in compiled.positiontup if n not in literal]
        columns = compiled._result_columns
        try:
            row = namedtuple("Row", [c[0] for c in columns])  # type: ignore[misc]
        except ValueError:  # two columns of one name, or a name a tuple cannot take
            return None
        processors = [c[3]._cached_result_processor(dialect, None) for c in columns]
        binds = compiled.binds
        if any(binds[name].type._cached_bind_processor(dialect) is not None for name in names):
            return None  # a type that converts its parameter (none of the hot reads has one)
        fixed = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
        return _Prepared(sql, names, fixed, row, processors if any(processors) else None)

    def _connection(self) -> sqlite3.Connection | None:
        if self.closed:
            return None
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Never waits: a busy database (which WAL readers meet only in rare cases) is read again
            # through SQLAlchemy, or on a worker thread when this runs on the event loop.
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:  # worker threads come and go: close the connections of those gone
                for _thread, old in [e for e in self._open if not e[0].is_alive()]:
                    old.close()
                self._open = [e for e in self._open if e[0].is_alive()]
                self._open.append((threading.current_thread(), conn))
        return conn

    def close(self) -> None:
        """Close every connection; later reads go through SQLAlchemy (a closed catalog)."""
        self.closed = True
        with self._lock:
            for _thread, conn in self._open:
                conn.close()
            self._open.clear()
        self._local = threading.local()
