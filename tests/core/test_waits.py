"""Calls that cannot wait run where waiting is refused (core/waits.py), and the hot one-statement
reads of a SQLite catalog straight through sqlite3 (core/catalog/quick_reads.py) give what
SQLAlchemy gives (README, "Small requests")."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event

from modelhangar.core import accounts, repo_blobs
from modelhangar.core.store import Actor, Store
from modelhangar.core.waits import WouldWait, no_waiting

if TYPE_CHECKING:
    from conftest import Kit, MakeStore

from conftest import repo


@contextlib.contextmanager
def through_sqlalchemy(store: Store) -> Iterator[list[str]]:
    """While a test listens for the read engine's statements, every read goes through SQLAlchemy."""
    seen: list[str] = []

    def on_execute(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(store.catalog.read_engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(store.catalog.read_engine, "before_cursor_execute", on_execute)


def both_ways(store: Store, read: Callable[[], Any]) -> tuple[Any, Any]:
    """`read()` as a server runs it (quick reads on SQLite) and through SQLAlchemy (seen by hooks)."""
    quick = read()
    with through_sqlalchemy(store) as seen:
        slow = read()
    assert seen or not store.catalog.is_sqlite, "the listened read went through SQLAlchemy"
    return quick, slow


def test_quick_reads_answer_what_sqlalchemy_answers(kit: Kit) -> None:
    store = kit.store
    made = accounts.add_user(store, "ann")
    alice = accounts.add_user(store, "alice")
    kit.create("open", [b"layer one"])
    kit.create("shut", [b"layer two"], owner="ann", visibility="private")
    ann = accounts.authenticate(store, made.token, "oci")
    other = accounts.authenticate(store, alice.token, "oci")
    assert ann is not None and other is not None
    layer = "sha256:" + __import__("hashlib").sha256(b"layer two").hexdigest()
    for actor in (
        None,
        Actor(face="oci"),
        ann,
        other,
        Actor(name="x", face="oci", principal="x", orgs=frozenset({"ann"})),
    ):
        for name in ("open", "shut", "missing"):
            for tag in ("latest", "nope"):
                got = both_ways(
                    store, lambda n=name, g=tag, a=actor: store.find_manifest(repo(n), tag=g, actor=a)
                )
                assert got[0] == got[1]
            got = both_ways(store, lambda n=name, a=actor: repo_blobs.blob_size(store, repo(n), layer, a))
            assert got[0] == got[1]
    assert store.find_manifest(repo("shut"), tag="latest", actor=other) is None
    assert store.find_manifest(repo("shut"), tag="latest", actor=ann) is not None
    assert repo_blobs.blob_size(store, repo("shut"), layer, ann) == len(b"layer two")
    quick, slow = both_ways(store, lambda: accounts.authenticate(store, made.token, "oci"))
    assert quick == slow == ann
    accounts.add_org(store, "acme", ["ann", "alice"])  # the organisations come in the same read
    quick, slow = both_ways(store, lambda: accounts.authenticate(store, made.token, "oci"))
    assert quick == slow and quick is not None and quick.orgs == {"acme"}
    wrong = made.token[:-1] + ("a" if made.token[-1] != "a" else "b")  # the right id, a wrong secret
    assert both_ways(store, lambda: accounts.authenticate(store, wrong, "oci")) == (None, None)


def test_a_revoked_token_stops_at_once_for_a_quick_read(kit: Kit, make_store: MakeStore) -> None:
    """Another store on the same catalog (another server) revokes; the next quick read refuses it."""
    store = kit.store
    made = accounts.add_user(store, "bob")
    assert accounts.authenticate(store, made.token, "oci") is not None  # its thread's connection is open
    other = make_store(store.settings.home)
    try:
        accounts.revoke_token(other, made.info.prefix)
    finally:
        other.close()
    assert accounts.authenticate(store, made.token, "oci") is None


def test_what_could_wait_is_refused_inside_no_waiting(store: Store) -> None:
    with no_waiting(), pytest.raises(WouldWait), store.catalog.write():
        pass
    with no_waiting(), pytest.raises(WouldWait):
        store.catalog.exclusive("anything", blocking=False).__enter__()
    if store.catalog.is_sqlite:  # readers in WAL mode never wait for a writer
        with no_waiting():
            assert store.find_manifest(repo("none"), tag="latest") is None
    else:  # a read over the network could
        with no_waiting(), pytest.raises(WouldWait):
            store.find_manifest(repo("none"), tag="latest")


def test_a_stale_touch_is_written_outside_no_waiting(kit: Kit) -> None:
    """A HEAD whose blob's touch is stale must write it: inside no_waiting that is refused before
    anything happens, and the same call elsewhere writes it."""
    store = kit.store
    kit.create("m", [b"the layer"])
    digest = "sha256:" + __import__("hashlib").sha256(b"the layer").hexdigest()
    from modelhangar.core.catalog import schema as t

    kit.execute(t.blobs.update().where(t.blobs.c.digest == digest).values(touched_at=0.0))
    with no_waiting(), pytest.raises(WouldWait):
        repo_blobs.claim(store, repo("m"), digest, Actor(face="oci"))
    with store.catalog.read() as conn:
        assert conn.execute(t.blobs.select().where(t.blobs.c.digest == digest)).one().touched_at == 0.0
    assert repo_blobs.claim(store, repo("m"), digest, Actor(face="oci")) == len(b"the layer")
    with store.catalog.read() as conn:
        assert conn.execute(t.blobs.select().where(t.blobs.c.digest == digest)).one().touched_at > 0.0
