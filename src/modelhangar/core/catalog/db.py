"""Opening the catalog: engines, transactions, and migrations to the newest schema.

Writers always take the database's write lock up front (SQLite `BEGIN IMMEDIATE`; row locks
with `SELECT ... FOR UPDATE` on PostgreSQL, see `core/store.py`), so a read-check-write never
interleaves with another writer, in this process or another one sharing the store.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import functools
import random
import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event

from modelhangar.core.catalog import async_reads, lease_files
from modelhangar.core.catalog.async_reads import AsyncReads
from modelhangar.core.catalog.quick_reads import QuickReads
from modelhangar.core.errors import CatalogUnavailable
from modelhangar.core.waits import NETWORK_READ, may_wait, reads_awaited, refused

MIGRATIONS = Path(__file__).parent / "migrations"
RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure
LOST_SQLSTATES = {"57P01", "57P02", "57P03"}  # admin, crash shutdown; cannot connect now (and class 08)
LOST_RETRIES = 5
"""How often `retrying` runs an operation again after its connection was lost: backing off from 50 ms
to 0.8 s, 1.55 s in all, about what a restarting or failing-over database takes to answer again."""
P = ParamSpec("P")
R = TypeVar("R")


def is_retryable(exc: BaseException) -> bool:
    """A transaction the database aborted only because of a concurrent one (safe to run again)."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(orig)


def lost_connection(exc: BaseException) -> bool:
    """A PostgreSQL connection that went (a restart, a failover, a killed backend, a dropped network)
    or could not be made. The database rolls back whatever transaction it was in."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    if state is not None:
        return str(state).startswith("08") or state in LOST_SQLSTATES
    return isinstance(exc, sa.exc.OperationalError) and type(exc.orig).__module__.startswith("psycopg")


@contextlib.contextmanager
def _lost_is_nothing(postgres: bool) -> Iterator[None]:
    """Ending something (a rollback, a close, an unlock) on a PostgreSQL connection that is gone: the
    database ended it with the connection, so a lost connection here is no error."""
    try:
        yield
    except sa.exc.DBAPIError as e:
        if not (postgres and lost_connection(e)):
            raise


_commits: contextvars.ContextVar[int] = contextvars.ContextVar("modelhangar_commits", default=0)
"""Commits made in this context (thread or task): `retrying` never runs again an operation that has
committed something in the try that failed."""


def retrying(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a whole catalog operation again (a few times, with jitter) when the database
    aborted its transaction for a deadlock or a serialization failure, or lost its connection before
    the commit (`CatalogUnavailable`, backing off for up to `LOST_RETRIES`); the operation must
    have no effect outside the catalog before its commit. A connection lost while committing is not
    run again: whether that commit took effect is unknown; nor is a try that failed after it committed
    a transaction (a delete's second phase), which would do that transaction twice. Commits are
    counted in the caller's context (its thread, or the task and greenlet it runs in): an operation
    that commits on a thread of its own would not be seen doing so, and none does."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(8):
            committed = _commits.get()
            try:
                return fn(*args, **kwargs)
            except CatalogUnavailable as e:
                if e.committing or attempt >= LOST_RETRIES or _commits.get() != committed:
                    raise
                pause = random.uniform(0.5, 1.5) * 0.05 * 2**attempt  # spread the tries after a restart
            except sa.exc.DBAPIError as e:
                if not is_retryable(e) or attempt == 7 or _commits.get() != committed:
                    raise
                pause = random.uniform(0.005, 0.05) * (attempt + 1)
            may_wait("a catalog operation run again")  # on the event loop: run it on a thread instead
            time.sleep(pause)
        raise AssertionError("unreachable")

    return wrapper


class Transaction:
    """The transaction `Catalog.transaction` hands its caller, who ends it: a commit that loses the
    connection raises `CatalogUnavailable(committing=True)` (README, "Safety rules")."""

    def __init__(self, trans: sa.RootTransaction, *, lost_matters: bool) -> None:
        self._trans = trans
        self._lost_matters = lost_matters

    @property
    def is_active(self) -> bool:
        return self._trans.is_active

    def commit(self) -> None:
        try:
            self._trans.commit()
        except sa.exc.DBAPIError as e:
            if self._lost_matters and lost_connection(e):
                raise CatalogUnavailable(committing=True) from e
            raise
        _commits.set(_commits.get() + 1)

    def rollback(self) -> None:
        self._trans.rollback()

    def rollback_after_failure(self) -> None:
        """Roll back what a failure (or an early return) left open: on a lost connection the database
        rolled it back already, and the failure that got here, not the lost connection, is raised."""
        with _lost_is_nothing(self._lost_matters):
            self._trans.rollback()


class Catalog:
    """A handle on the catalog database: `write()` and `read()` transactions."""

    def __init__(self, url: str, *, lock_dir: Path | None = None) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        else:
            # As many connections as the server runs requests at once, each pinged as it is taken from
            # the pool: the hot reads go to `async_reads`, so pooled connections sit idle long enough
            # for a server's idle timeout or a NAT to drop them, and a write must not find that out.
            self.engine = sa.create_engine(
                url, pool_size=40, max_overflow=10, pool_recycle=300, pool_pre_ping=True, hide_parameters=True
            )
            # Reads that must agree (fsck, du, listings) see one snapshot: REPEATABLE READ, read-only.
            self.read_engine = self.engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        # One statement is its own snapshot: on PostgreSQL `read_once` runs it with no transaction
        # around it (autocommit), one round trip instead of three (BEGIN, the query, the ROLLBACK of
        # the pool's reset); the hot reads of HEAD blob and GET manifest are such reads (issue 16).
        self.statement_engine = self.read_engine
        if not self.is_sqlite:
            self.statement_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._lock_dir = lock_dir
        self._quick: QuickReads | None = None
        self._async: AsyncReads | None = None
        self._engines = (self.engine, self.read_engine, self.statement_engine)
        parsed = sa.engine.make_url(url)
        if self.is_sqlite and parsed.database and parsed.database != ":memory:" and not parsed.query:
            self._quick = QuickReads(parsed.database, self.read_engine)
        elif not self.is_sqlite and parsed.drivername == "postgresql+psycopg" and async_reads.available():
            self._async = AsyncReads(url, self.engine)
        self.awaits_reads = self._async is not None
        """Whether a read that would wait may be awaited on the event loop (`faces/quick.py`)."""

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to `revision` (the newest by default); safe when several processes start
        at once. A catalog already at the newest revision costs one query (Alembic is not loaded)."""
        if revision == "head" and self.at_head():
            return
        from alembic import command  # a second or more at start-up: only when there is work
        from alembic.config import Config

        with self._migration_lock():
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)

    def at_head(self) -> bool:
        """Is the catalog at the newest migration (the one no other migration follows)?"""
        try:
            with self.read() as conn:
                current = {r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
        except sa.exc.DBAPIError:  # no catalog yet
            return False
        return current == {head_revision()}

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.is_sqlite and self._lock_dir is not None:
            self._lock_dir.mkdir(parents=True, exist_ok=True)
            with open(self._lock_dir / "catalog.migrate.lock", "wb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                yield
        elif not self.is_sqlite:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(7340921)"))
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(7340921)"))
                    conn.commit()
        else:
            yield

    @contextlib.contextmanager
    def _unavailable_if_lost(self) -> Iterator[None]:
        """A lost PostgreSQL connection, in the block, as `CatalogUnavailable`: every face answers it
        503 with `Retry-After`, and `retrying` runs the operation again."""
        try:
            yield
        except sa.exc.DBAPIError as e:
            if self.is_sqlite or not lost_connection(e):
                raise
            raise CatalogUnavailable() from e

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction that holds the write lock from its first statement."""
        may_wait("the catalog's write lock")
        with self._unavailable_if_lost(), self.engine.connect() as conn:
            trans = Transaction(conn.begin(), lost_matters=not self.is_sqlite)
            try:
                yield conn
            except BaseException:
                trans.rollback_after_failure()
                raise
            trans.commit()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[tuple[sa.Connection, Transaction]]:
        """A write transaction the caller commits or rolls back itself (dry runs roll back)."""
        may_wait("the catalog's write lock")
        with self._unavailable_if_lost(), self.engine.connect() as conn:
            trans = Transaction(conn.begin(), lost_matters=not self.is_sqlite)
            try:
                yield conn, trans
            finally:
                if trans.is_active:
                    trans.rollback_after_failure()

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only snapshot: every statement in it sees the catalog as of its first one (SQLite: a
        deferred transaction in WAL mode; PostgreSQL: REPEATABLE READ, READ ONLY). On SQLite it never
        waits for a writer, so it may run inside `waits.no_waiting()`."""
        self._before_read(self.read_engine)
        with self._unavailable_if_lost():
            conn = self.read_engine.connect()
            try:
                yield conn
            finally:
                self._release(conn)

    def _release(self, conn: sa.Connection) -> None:
        """Close a read's connection (its rollback ends the snapshot). A connection lost by then loses
        nothing: what the read read is read, and the database ended its snapshot with it; the error the
        read is ending with, if any, is raised instead."""
        with _lost_is_nothing(not self.is_sqlite):
            try:
                conn.close()
            except sa.exc.DBAPIError:
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    conn.invalidate()  # never back into the pool
                raise

    def exclusive(self, name: str, *, blocking: bool) -> contextlib.AbstractContextManager[bool]:
        """A store-wide lock held for the block (yields False when `blocking` is off and another holds it).

        PostgreSQL: a session advisory lock on a connection of its own; elsewhere an flock on
        `<lock_dir>/<name>.lock`. Either way it goes with its holder if that process dies.
        """
        return self._held(7340922 + sum(name.encode()) % 1000, Path(f"{name}.lock"), blocking=blocking)

    def lease(self, name: str) -> contextlib.AbstractContextManager[bool]:
        """A named lease held for the block, never waiting (yields False if another holds it).

        Like `exclusive`, but keyed by the whole name (a 64-bit hash in a key space of its own), so
        many leases (one per process, one per upload session) never share a key. It goes with its
        holder if that process dies: a PostgreSQL session advisory lock on a connection of its
        own, or an flock on `<lock_dir>/leases/<name>.lock` on SQLite.
        """
        return self._held(lease_files.key(name), lease_files.file(name), blocking=False)

    def gate(self, name: str, *, shared: bool) -> contextlib.AbstractContextManager[bool]:
        """A lease any number of holders share (`shared`) or one holds alone, never waiting (yields
        False when it conflicts with a holder). The store's blob location is one: every open store
        shares it, `hangar migrate-blobs` takes it alone (README, "Moving blobs to another place")."""
        return self._held(lease_files.key(name), lease_files.file(name), blocking=False, shared=shared)

    @contextlib.contextmanager
    def _held(self, key: int, lock_file: Path, *, blocking: bool, shared: bool = False) -> Iterator[bool]:
        """The lock of `exclusive`, `lease` and `gate`: the advisory lock `key` on PostgreSQL, an flock
        on `<lock_dir>/<lock_file>` on SQLite; yields whether it is held."""
        may_wait("a store-wide lock")
        if not self.is_sqlite:
            mode = "_shared" if shared else ""
            with self._unavailable_if_lost():
                conn = self.engine.connect()
                try:
                    fn = f"pg_advisory_lock{mode}" if blocking else f"pg_try_advisory_lock{mode}"
                    got = conn.execute(sa.text(f"SELECT {fn}(:k)"), {"k": key}).scalar()
                    conn.commit()
                except BaseException:
                    self._release(conn)
                    raise
            held = blocking or bool(got)
            try:
                yield held
            finally:
                try:
                    with _lost_is_nothing(True):  # a lost connection took the lock with it
                        if held:
                            conn.execute(sa.text(f"SELECT pg_advisory_unlock{mode}(:k)"), {"k": key})
                            conn.commit()
                finally:
                    self._release(conn)
            return
        assert self._lock_dir is not None
        with lease_files.flocked(self._lock_dir / lock_file, shared=shared, blocking=blocking) as held:
            yield held

    def read_once(self, statement: sa.Executable, params: dict[str, Any], *, reuse: bool = False) -> Any:
        """The first row of one read-only statement (or None), run again once on a fresh connection if
        the pooled one turned out dead (a database restart). `reuse`: on SQLite, the same answer as
        this thread's last read of it while nothing has been committed since (`QuickReads.first`)."""
        if self.is_sqlite and self._quick is not None and self._quick.usable(statement):
            row = self._quick.first(statement, params, reuse=reuse)
            if row is not NotImplemented:
                return row
        elif reads_awaited() and self._async is not None and self._async.usable(statement, self._engines):
            from sqlalchemy.util import await_only

            row = await_only(self._async.first(statement, params))  # the loop serves others meanwhile
            if row is not NotImplemented:
                return row
        self._before_read(self.statement_engine)
        with self._unavailable_if_lost():
            for attempt in range(2):
                try:
                    with self.statement_engine.connect() as conn:
                        return conn.execute(statement, params).first()
                except sa.exc.DBAPIError as e:
                    if not e.connection_invalidated or attempt:
                        raise
        raise AssertionError("unreachable")

    def stream(
        self, conn: sa.Connection, statement: sa.Executable, params: dict[str, Any], batch: int
    ) -> Generator[Sequence[Any], None, None]:
        """The rows of one statement on `conn` (a `read` snapshot), `batch` at a time, for listings
        that must not cost an object per row: on SQLite a reusable statement is read straight from
        the connection's DBAPI cursor (plain tuples, `quick_reads`), anything else through a
        SQLAlchemy result read in partitions (rows by index work either way)."""
        if self.is_sqlite and self._quick is not None and self._quick.usable(statement):
            batches = self._quick.rows(conn, statement, params, batch)
            if batches is not None:
                yield from batches
                return
        result = conn.execution_options(yield_per=batch).execute(statement, params)
        try:
            for rows in result.partitions():
                yield rows
                if len(rows) < batch:  # the last: asking for more would be another round trip
                    break
        finally:
            result.close()

    async def aclose(self) -> None:
        """Close the connections the running event loop keeps for awaited reads (`async_reads`)."""
        if self._async is not None:
            await self._async.aclose()

    def _before_read(self, engine: sa.Engine) -> None:
        """A read through SQLAlchemy may wait on PostgreSQL (the network) and, anywhere, for a pooled
        connection when every one is out (`waits.may_wait`); a SQLite read in WAL mode never waits
        for a writer."""
        if not self.is_sqlite:
            may_wait(NETWORK_READ)
        elif refused() and _pool_exhausted(engine):
            may_wait("a free catalog connection")

    def dispose(self) -> None:
        if self._quick is not None:
            self._quick.close()
        self.engine.dispose()
        if self.is_sqlite:  # on PostgreSQL the read engine shares the write engine's pool
            self.read_engine.dispose()


_REVISION = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:"([^"]*)"|None)', re.M)


@functools.cache
def head_revision() -> str:
    """The newest migration: the revision no migration names as its `down_revision` (read from the
    migration files' text, without loading Alembic)."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        fields = dict((m.group(1), m.group(2)) for m in _REVISION.finditer(path.read_text()))
        if "revision" in fields:
            revisions.add(fields["revision"])
            parents.add(fields.get("down_revision"))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the catalog migrations have {len(heads)} heads: {sorted(map(str, heads))}")
    return str(heads.pop())


def _pool_exhausted(engine: sa.Engine) -> bool:
    """Whether a checkout from `engine`'s pool could wait for a connection to come back."""
    pool = engine.pool
    if not isinstance(pool, sa.pool.QueuePool):
        return False
    return pool.checkedout() >= pool.size() + max(pool._max_overflow, 0)


def _sqlite_engine(url: str, *, immediate: bool) -> sa.Engine:
    # Readers keep as many connections as the server runs requests at once (its 40 worker threads), so
    # a busy server does not open and close a connection per request; writers queue for one lock anyway.
    pool = {"pool_size": 5, "max_overflow": 10} if immediate else {"pool_size": 40, "max_overflow": 10}
    engine = sa.create_engine(
        url, connect_args={"timeout": 60, "check_same_thread": False}, hide_parameters=True, **pool
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
