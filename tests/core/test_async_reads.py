"""PostgreSQL reads awaited on the event loop (core/catalog/async_reads.py, run by faces/quick.py):
the hot one-statement reads answer on the loop, without a worker thread, exactly what SQLAlchemy
answers; a call that must write after its reads runs again on a thread; a dropped connection, a
statement hook or a statement this path cannot take falls back to SQLAlchemy (README, "Small
requests")."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event

from conftest import repo
from modelhangar.core import accounts, repo_blobs
from modelhangar.core.catalog import schema as t
from modelhangar.core.store import Actor, Store
from modelhangar.faces import quick

if TYPE_CHECKING:
    from conftest import Kit


def postgres_only(store: Store) -> None:
    if store.catalog.is_sqlite:
        pytest.skip("reads are awaited on PostgreSQL only (SQLite reads never wait: quick_reads.py)")


def on_loop(fn: Callable[[], Any]) -> Callable[[], tuple[Any, bool]]:
    """`fn` as a quick call that also says whether it ran on the loop's thread (the main thread here)."""

    def call() -> tuple[Any, bool]:
        return fn(), threading.current_thread() is threading.main_thread()

    return call


def test_hot_reads_are_awaited_on_the_loop_and_answer_what_sqlalchemy_answers(kit: Kit) -> None:
    store = kit.store
    postgres_only(store)
    made = accounts.add_user(store, "ann")
    kit.create("open", [b"layer one"])
    kit.create("shut", [b"layer two"], owner="ann", visibility="private")
    ann = accounts.authenticate(store, made.token, "oci")
    layer = "sha256:" + hashlib.sha256(b"layer two").hexdigest()
    reads: list[Callable[[], Any]] = [lambda: accounts.authenticate(store, made.token, "oci")]
    for actor in (None, Actor(face="oci"), ann):
        for name in ("open", "shut", "missing"):
            reads.append(lambda n=name, a=actor: store.find_manifest(repo(n), tag="latest", actor=a))
            reads.append(lambda n=name, a=actor: repo_blobs.blob_size(store, repo(n), layer, a))

    async def main() -> list[tuple[Any, bool]]:
        return [await quick.run(on_loop(read)) for read in reads]

    answers = asyncio.run(main())
    assert [a for a, _ in answers] == [read() for read in reads]  # the same as through SQLAlchemy
    assert [looped for _, looped in answers] == [True] * len(reads), "a hot read hopped to a worker thread"
    assert answers[0][0] == ann and any(a is not None for a, _ in answers[1:])


def test_many_reads_at_once_all_answer(kit: Kit) -> None:
    store = kit.store
    postgres_only(store)
    kit.create("m", [b"the layer"])
    digest = "sha256:" + hashlib.sha256(b"the layer").hexdigest()

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(quick.run(repo_blobs.blob_size, store, repo("m" if i % 3 else "x"), digest) for i in range(60))
        )

    assert asyncio.run(main()) == [len(b"the layer") if i % 3 else None for i in range(60)]


def test_a_call_that_must_write_after_its_reads_runs_again_on_a_thread(kit: Kit) -> None:
    """A HEAD whose blob's touch is stale: its read is awaited, its write is refused on the loop,
    and the whole call runs again on a worker thread, which writes the touch."""
    store = kit.store
    postgres_only(store)
    kit.create("m", [b"the layer"])
    digest = "sha256:" + hashlib.sha256(b"the layer").hexdigest()
    kit.execute(t.blobs.update().where(t.blobs.c.digest == digest).values(touched_at=0.0))
    size, looped = asyncio.run(
        quick.run(on_loop(lambda: repo_blobs.claim(store, repo("m"), digest, Actor(face="oci"))))
    )
    assert size == len(b"the layer") and not looped
    with store.catalog.read() as conn:
        assert conn.execute(t.blobs.select().where(t.blobs.c.digest == digest)).one().touched_at > 0.0


def test_a_dropped_connection_or_a_statement_hook_falls_back_to_sqlalchemy(kit: Kit) -> None:
    store = kit.store
    postgres_only(store)
    kit.create("m", [b"the layer"])
    digest = "sha256:" + hashlib.sha256(b"the layer").hexdigest()
    seen: list[str] = []

    def on_execute(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    def size() -> Callable[[], tuple[Any, bool]]:
        return on_loop(lambda: repo_blobs.blob_size(store, repo("m"), digest))

    async def main() -> list[tuple[Any, bool]]:
        answers = [await quick.run(size())]  # the loop's connection is open now
        with store.catalog.write() as conn:  # a database restart, as far as every connection knows
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        answers.append(await quick.run(size()))  # the dropped connection: read through SQLAlchemy
        assert store.list_repositories() == [repo("m")]  # the pool's dead connections: pinged, replaced
        answers.append(await quick.run(size()))  # and on the loop again, on a new connection
        event.listen(store.catalog.engine, "before_cursor_execute", on_execute)
        try:
            answers.append(await quick.run(size()))  # a listened read goes where the hook sees it
        finally:
            event.remove(store.catalog.engine, "before_cursor_execute", on_execute)
        return answers

    answers = asyncio.run(main())
    assert [a for a, _ in answers] == [len(b"the layer")] * 4
    assert [looped for _, looped in answers] == [True, False, True, False]
    assert seen, "the hook saw the read"


def test_connections_that_hang_never_hold_up_the_other_reads(kit: Kit) -> None:
    """Every connection of the loop stuck behind a lock on one table: a read of another table does
    not queue behind them; it is read through SQLAlchemy, and the stuck reads answer once the lock
    goes (README, "Small requests")."""
    import psycopg

    store = kit.store
    postgres_only(store)
    made = accounts.add_user(store, "ann")
    kit.create("m", [b"the layer"])
    digest = "sha256:" + hashlib.sha256(b"the layer").hexdigest()
    url = store.settings.database_url.replace("postgresql+psycopg://", "postgresql://")

    async def main() -> tuple[Any, list[Any]]:
        await quick.run(repo_blobs.blob_size, store, repo("m"), digest)  # the loop's pool is open
        with psycopg.connect(url) as locker:
            locker.execute("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
            stuck = [
                asyncio.ensure_future(quick.run(repo_blobs.blob_size, store, repo("m"), digest))
                for _ in range(12)
            ]
            await asyncio.sleep(0.5)
            assert not any(task.done() for task in stuck)  # held by the lock
            actor = await asyncio.wait_for(quick.run(accounts.authenticate, store, made.token, "oci"), 60)
            assert not any(task.done() for task in stuck)  # answered while the lock still held
            locker.rollback()
        return actor, await asyncio.gather(*stuck)

    actor, sizes = asyncio.run(main())
    assert actor is not None and actor.principal == "ann"
    assert sizes == [len(b"the layer")] * 12
