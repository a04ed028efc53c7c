"""Recency on read paths (core/recency.py): reuse touches at a granularity, last-used times in batches.

The store tests open two stores over one data directory and catalog (two connections, as two
server processes have) and pin interleavings with statement hooks; the server tests stop and
kill real `hangar serve` processes to see what reached the catalog.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy as sa
from test_multiprocess import Pause, Runner

from harness import (
    AUTH_VARIANTS,
    Auth,
    StartServer,
    assert_store_consistent,
    assert_tokens_secret,
    bearer,
    hangar_json,
    image_manifest,
    wait_until,
)
from modelhangar.core import uploads
from modelhangar.core.catalog import schema as t
from modelhangar.core.recency import touch_granularity
from modelhangar.core.store import Actor, Store

if TYPE_CHECKING:
    from conftest import MakeStore

FUSE = 60.0  # the largest fuse: its granularity is the full 5 s, so the margins below are wide
G = touch_granularity(FUSE)


def touched_at(store: Store, digest: str) -> float:
    with store.catalog.read() as conn:
        value = conn.execute(sa.select(t.blobs.c.touched_at).where(t.blobs.c.digest == digest)).scalar()
    assert value is not None
    return float(value)


def set_touched(store: Store, digest: str, ts: float) -> None:
    with store.catalog.write() as conn:
        conn.execute(t.blobs.update().where(t.blobs.c.digest == digest).values(touched_at=ts))


def test_the_granularity_is_a_sixth_of_the_fuse_at_most_five_seconds() -> None:
    assert (touch_granularity(0), touch_granularity(6), touch_granularity(30), touch_granularity(60)) == (
        0,
        1,
        5,
        5,
    )


def test_a_fresh_touch_is_not_rewritten_and_deletes_allow_for_its_age(make_store: MakeStore) -> None:
    reuser = make_store(HANGAR_REUSE_FUSE=f"{FUSE:g}s")
    deleter = make_store(HANGAR_REUSE_FUSE=f"{FUSE:g}s")
    assert deleter.reuse_fuse == FUSE + G
    digest = reuser.put_blob_bytes(b"a layer about to be named").digest
    stored = time.time() - G / 2  # fresher than the granularity: a reuse answers without writing
    set_touched(reuser, digest, stored)
    assert reuser.reuse_blob(digest) == len(b"a layer about to be named")
    after = touched_at(reuser, digest)
    assert after == stored or after >= stored + G / 2  # unchanged, unless this test ran slower than G/2
    # The reuse happened at about `stored + G/2`, so the stored touch is up to G older than the reuse.
    # Shift time: a delete FUSE - 1 s after that reuse must still defer the blob (fuse + g).
    set_touched(reuser, digest, after - (FUSE - 1) - G / 2)
    assert uploads.withdraw_blob(deleter, digest, Actor()) == "recent"
    assert deleter.blob_size(digest) is not None
    # Past fuse + g it goes.
    set_touched(reuser, digest, time.time() - FUSE - G - 1)
    assert uploads.withdraw_blob(deleter, digest, Actor()) == "deleted"
    assert reuser.reuse_blob(digest) is None


def test_a_stale_touch_is_written(make_store: MakeStore) -> None:
    store = make_store(HANGAR_REUSE_FUSE=f"{FUSE:g}s")
    digest = store.put_blob_bytes(b"an old layer").digest
    set_touched(store, digest, 1000.0)
    before = time.time()
    assert store.reuse_blob(digest) == len(b"an old layer")
    assert touched_at(store, digest) >= before


def test_without_a_fuse_every_reuse_writes(make_store: MakeStore) -> None:
    store = make_store(HANGAR_REUSE_FUSE="0")
    digest = store.put_blob_bytes(b"a layer").digest
    set_touched(store, digest, time.time() - 0.5)
    before = time.time()
    assert store.reuse_blob(digest) is not None
    assert touched_at(store, digest) >= before


def _is_blob_lock(statement: str, _params: Any) -> bool:
    """The first statement of the touch's write: SQLite's BEGIN IMMEDIATE, PostgreSQL's row lock."""
    return statement.startswith("BEGIN IMMEDIATE") or (
        statement.startswith("SELECT blobs.") and "FOR UPDATE" in statement
    )


def test_a_reuse_that_loses_the_race_to_a_delete_finds_nothing(make_store: MakeStore) -> None:
    """The reuse read the blob present with a stale touch, then a delete retired it before the
    reuse took the row lock: the reuse must answer None (a HEAD 404), never a size."""
    reuser = make_store(HANGAR_REUSE_FUSE=f"{FUSE:g}s")
    deleter = make_store(HANGAR_REUSE_FUSE=f"{FUSE:g}s")
    digest = reuser.put_blob_bytes(b"a layer nobody names").digest
    set_touched(reuser, digest, 1000.0)
    pause = Pause(reuser, _is_blob_lock)
    got: list[int | None] = []
    runner = Runner(lambda: got.append(reuser.reuse_blob(digest)))
    runner.start()
    assert pause.reached.wait(60)
    assert uploads.withdraw_blob(deleter, digest, Actor()) == "deleted"
    pause.go.set()
    runner.join(60)
    assert runner.error is None and got == [None]
    assert deleter.blob_size(digest) is None and not deleter.blobs.exists(digest)


def test_a_fresh_reuse_answers_while_a_delete_holds_the_lock_and_the_delete_defers(
    make_store: MakeStore,
) -> None:
    """Reads never wait for writers: a reuse whose stored touch is fresh answers from its snapshot
    while a delete holds the row lock, and that delete, seeing the same touch, leaves the blob."""
    reuser = make_store(HANGAR_REUSE_FUSE=f"{FUSE:g}s")
    deleter = make_store(HANGAR_REUSE_FUSE=f"{FUSE:g}s")
    digest = reuser.put_blob_bytes(b"a layer being pushed").digest
    pause = Pause(deleter, lambda stmt, _p: "FROM manifest_blobs" in stmt)  # under the row lock
    outcome: list[str] = []
    runner = Runner(lambda: outcome.append(uploads.withdraw_blob(deleter, digest, Actor())))
    runner.start()
    assert pause.reached.wait(60)
    assert reuser.reuse_blob(digest) == len(b"a layer being pushed")
    pause.go.set()
    runner.join(60)
    assert runner.error is None and outcome == ["recent"]
    assert reuser.blob_size(digest) is not None


def test_uses_are_written_at_once_without_buffering_and_on_flush_with_it(make_store: MakeStore) -> None:
    store = make_store()
    store.put_blob_bytes(b"cfg")
    store.put_blob_bytes(b"weights")
    store.put_manifest("registry.ollama.ai/library/m", "latest", image_manifest(b"cfg", [b"weights"]))

    def stored() -> float:
        with store.catalog.read() as conn:
            return float(conn.execute(sa.select(t.tags.c.last_used_at)).scalar_one())

    with store.catalog.write() as conn:
        conn.execute(t.tags.update().values(last_used_at=1000.0))
    store.mark_used("registry.ollama.ai/library/M", "LATEST")  # names match case-insensitively
    first = stored()
    assert first > 1000.0
    store.last_used.buffering = True
    with store.catalog.write() as conn:
        conn.execute(t.tags.update().values(last_used_at=1000.0))
    store.mark_used("registry.ollama.ai/library/m", "latest")
    assert stored() == 1000.0
    record = store.get_tag("registry.ollama.ai/library/m", "latest")
    assert record is not None and record.last_used_at >= first  # this process sees its pending use
    assert [r.last_used_at for r in store.list_tags()] == [record.last_used_at]
    assert store.last_used.flush() == 1
    assert stored() == record.last_used_at
    assert store.last_used.flush() == 0


# ---------------------------------------------------------------------- servers

MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"


def push(url: str, name: str, headers: dict[str, str] | None = None) -> None:
    """A small image `name:v1` through /v2 (so the OCI pull path can use it)."""
    with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        for data in (b"config", b"layer"):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            r = http.post(f"/v2/{name}/blobs/uploads/?digest={digest}", content=data)
            assert r.status_code == 201, r.text
        r = http.put(
            f"/v2/{name}/manifests/v1",
            content=image_manifest(b"config", [b"layer"]),
            headers={"Content-Type": MANIFEST_MT},
        )
        assert r.status_code == 201, r.text


def last_used(home: Path, name: str) -> float:
    with sqlite3.connect(home / "catalog.db") as db:
        row = db.execute(
            "SELECT last_used_at FROM tags JOIN repositories ON repositories.id = tags.repository_id"
            " WHERE repositories.name_key = ?",
            ("registry.ollama.ai/" + name,),
        ).fetchone()
    assert row is not None
    return float(row[0])


def backdate(home: Path, ts: float) -> None:
    with sqlite3.connect(home / "catalog.db") as db:
        db.execute("UPDATE tags SET last_used_at = ?", (ts,))


def pull(url: str, name: str, headers: dict[str, str] | None = None) -> None:
    r = httpx.get(f"{url}/v2/{name}/manifests/v1", headers={"Accept": MANIFEST_MT, **(headers or {})})
    assert r.status_code == 200, r.text


def token_rows(home: Path, user: str) -> dict[str, dict[str, Any]]:
    """`hangar token list USER` on the store (no server): {token name: its row}."""
    return {t["name"]: t for t in hangar_json("token", "list", user, home=home)["tokens"]}


def test_a_server_writes_last_used_times_at_shutdown(home: Path, start_server: StartServer) -> None:
    srv = start_server(home, env={"HANGAR_LAST_USED_FLUSH": "1h"})
    push(srv.url, "library/kept")
    backdate(home, 1000.0)
    before = time.time()
    pull(srv.url, "library/kept")
    assert last_used(home, "library/kept") == 1000.0  # pending: the next flush is an hour away
    srv.stop()  # SIGTERM: a graceful shutdown
    assert last_used(home, "library/kept") >= before


def test_a_server_writes_last_used_times_periodically(home: Path, start_server: StartServer) -> None:
    srv = start_server(home, env={"HANGAR_LAST_USED_FLUSH": "100ms"})
    push(srv.url, "library/kept")
    backdate(home, 1000.0)
    pull(srv.url, "library/kept")
    assert wait_until(lambda: last_used(home, "library/kept") > 1000.0)
    assert srv.running()


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_a_crash_loses_at_most_the_pending_recency(home: Path, start_server: StartServer, auth: str) -> None:
    """In the `tokens` run a user's token is on every request: the token's pending last-used time is
    lost with the model's, while a revocation, written at once, survives the crash."""
    who = Auth(auth, home)
    srv = start_server(home, env={**who.env, "HANGAR_LAST_USED_FLUSH": "1h"})
    push(srv.url, "library/kept", who.user)
    backdate(home, 1000.0)
    pull(srv.url, "library/kept", who.user)
    doomed: str | None = None
    if who.on:
        with httpx.Client(base_url=srv.url, headers=who.user) as http:
            made = http.post("/api/hangar/tokens", json={"name": "doomed"})
            assert made.status_code == 200, made.text
            doomed = made.json()["token"]
            pull(srv.url, "library/kept", bearer(doomed))
            assert http.post(f"/api/hangar/tokens/{made.json()['prefix']}/revoke").status_code == 200
    srv.kill()
    assert last_used(home, "library/kept") == 1000.0  # the use is lost, nothing else
    if who.on:
        rows = token_rows(home, "worker")
        assert rows["default"]["last_used_at"] is None and rows["default"]["active"]  # the use is lost
        assert rows["doomed"]["revoked_at"] is not None
    assert_store_consistent(home)
    again = start_server(home, env=who.env)
    pull(again.url, "library/kept", who.user)
    if who.on:
        r = httpx.get(f"{again.url}/v2/library/kept/manifests/v1", headers=bearer(doomed))
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert wait_until(lambda: token_rows(home, "worker")["default"]["last_used_at"] is not None)
        who.assert_secret(logs=[srv.log(), again.log()], home=home)
        assert_tokens_secret([str(doomed)], logs=[srv.log(), again.log()], home=home)


def test_prune_in_the_server_sees_uses_not_yet_written(home: Path, start_server: StartServer) -> None:
    srv = start_server(home, env={"HANGAR_LAST_USED_FLUSH": "1h"})
    push(srv.url, "library/used")
    push(srv.url, "library/idle")
    backdate(home, time.time() - 10 * 86400)
    pull(srv.url, "library/used")
    doc = hangar_json("prune", "--unused-for", "1d", "--host", srv.host, home=home)
    assert [r["model"] for r in doc["results"]] == ["idle:v1"], doc
    listed = httpx.get(f"{srv.url}/v2/library/used/tags/list").json()
    assert listed["tags"] == ["v1"]


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANGAR_LAST_USED_FLUSH", raising=False)
