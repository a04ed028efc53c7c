"""One-statement reads of a PostgreSQL catalog awaited on the server's event loop (`Catalog.read_once`).

On PostgreSQL a read waits for the network, so the hot reads of small requests (the token of every
request, HEAD of a blob, GET of a manifest) used to hop to a worker thread and through SQLAlchemy's
pool: about 1 ms of the server's CPU per request, where the same request on SQLite, read on the loop,
costs a quarter of that (issue 16). Here such a read is a prebuilt statement (`reusable`), compiled
once for psycopg, run on one of a few `psycopg.AsyncConnection`s the loop keeps (autocommit: one
statement, its own snapshot, as `read_once` promises), and awaited.

The core is synchronous. `faces/quick.py` runs a core call in a greenlet on the loop inside
`waits.awaited_reads()`; `Catalog.read_once` then hands its statement here and waits for the answer
with SQLAlchemy's `await_only`, which lets the loop run other requests meanwhile. Anything else on the
way that could wait (a write, a lock) still refuses, and the whole call runs again on a worker
thread. A statement this path does not take, a broken connection, or any error of psycopg's answers
`NotImplemented`: the caller reads through SQLAlchemy instead, on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import weakref
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelhangar.core.catalog.quick_reads import REUSABLE, inline_literals

POOL_SIZE = 8
"""Connections per event loop: a read takes one for one round trip, so a few serve many requests."""
SLOT_WAIT = 1.0
"""Seconds a read waits for one of them before it goes to a worker thread instead (SQLAlchemy's pool of
many connections): connections that hang (a failover, a locked table) never hold up the others."""
READ_TIMEOUT = 10.0
"""Seconds a read may take on its connection before that connection is dropped and the read goes to a
worker thread; connecting has `CONNECT_TIMEOUT`."""
CONNECT_TIMEOUT = 5


def available() -> bool:
    """Whether this process can await reads (psycopg and greenlet are installed)."""
    return all(importlib.util.find_spec(name) is not None for name in ("greenlet", "psycopg"))


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    fixed: dict[str, Any]
    """Values of the statement's own parameters (constants); the caller gives every other one."""
    row: Any
    """Makes a row read by attribute, as SQLAlchemy's are: a named tuple."""


def _native(type_: Any) -> bool:
    """Whether psycopg returns a column of this type as SQLAlchemy would (ints, floats, text, bytes,
    booleans): then no result conversion is needed. Any other type sends the statement elsewhere."""
    if isinstance(type_, sa.Float):
        return not type_.asdecimal
    if isinstance(type_, sa.Enum):
        return False
    return isinstance(type_, (sa.Integer, sa.String, sa.Boolean, sa.LargeBinary))


class _Pool:
    """The connections of one event loop: at most `POOL_SIZE` reads at once, each on an idle
    connection or, when none is idle, a new one."""

    def __init__(self) -> None:
        self.slots = asyncio.Semaphore(POOL_SIZE)
        self.idle: list[Any] = []


class AsyncReads:
    """The prebuilt statements of one PostgreSQL catalog and, per event loop, its connections."""

    def __init__(self, url: str, engine: sa.Engine) -> None:
        libpq = sa.engine.make_url(url).set(drivername="postgresql")
        self.conninfo = libpq.render_as_string(hide_password=False)
        self.engine = engine
        self._prepared: dict[int, _Prepared | None] = {}
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()
        self.closed = False

    def usable(self, statement: Any, engines: tuple[sa.Engine, ...]) -> bool:
        # While a test listens for statements (the hooks that pin interleavings), they all go through
        # SQLAlchemy, so the hooks see every one.
        return id(statement) in REUSABLE and all(not e.dispatch.before_cursor_execute for e in engines)

    def prepared(self, statement: Any) -> _Prepared | None:
        key = id(statement)
        if key not in self._prepared:
            try:
                self._prepared[key] = self._prepare(statement)
            except Exception:  # whatever this path cannot compile is read through SQLAlchemy
                self._prepared[key] = None
        return self._prepared[key]

    def _prepare(self, statement: Any) -> _Prepared | None:
        dialect = self.engine.dialect
        compiled: Any = statement.compile(dialect=dialect)
        if compiled.post_compile_params:
            return None  # a list expanded at execution
        inlined = inline_literals(compiled, dialect)
        if inlined is None:
            return None
        sql, literal = inlined
        binds = {name: bind for name, bind in compiled.binds.items() if name not in literal}
        if any(bind.type._cached_bind_processor(dialect) is not None for bind in binds.values()):
            return None  # a type that converts its parameter (none of the hot reads has one)
        columns = compiled._result_columns
        if not all(_native(c[3]) for c in columns):
            return None
        try:
            row = namedtuple("Row", [c[0] for c in columns])  # type: ignore[misc]
        except ValueError:  # two columns of one name, or a name a tuple cannot take
            return None
        fixed = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
        return _Prepared(sql, fixed, row)

    async def first(self, statement: Any, params: dict[str, Any]) -> Any:
        """The first row of `statement` (or None), or NotImplemented when this path does not take it."""
        prepared = self.prepared(statement)
        if prepared is None or self.closed:
            return NotImplemented
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _Pool()
        try:
            async with asyncio.timeout(SLOT_WAIT):
                await pool.slots.acquire()
        except TimeoutError:  # every connection busy for that long: something hangs
            return NotImplemented
        try:
            conn = pool.idle.pop() if pool.idle else await self._connect()
            if conn is None:
                return NotImplemented
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    cursor = await conn.execute(prepared.sql, {**prepared.fixed, **params})
                    raw = await cursor.fetchone()
            except Exception:  # a dropped connection, a restarted server, a stale plan, a timeout
                await _close_quietly(conn)
                return NotImplemented
            except BaseException:  # cancelled mid-read: the connection goes
                closing = asyncio.ensure_future(_close_quietly(conn))
                _CLOSING.add(closing)
                closing.add_done_callback(_CLOSING.discard)
                raise
            pool.idle.append(conn)
        finally:
            pool.slots.release()
        return None if raw is None else prepared.row(*raw)

    async def _connect(self) -> Any | None:
        import psycopg

        try:
            return await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
        except Exception:
            return None

    async def aclose(self) -> None:
        """Close the idle connections of the running loop; later reads go through SQLAlchemy."""
        self.closed = True
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        for conn in pool.idle if pool is not None else []:
            await _close_quietly(conn)


_CLOSING: set[asyncio.Future[None]] = set()
"""Connections being closed after a cancelled read (kept until done, so none is collected midway)."""


async def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await conn.close()
