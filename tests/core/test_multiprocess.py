"""Concurrent writers on one store: OS processes racing each other, and pinned interleavings.

In the process test, a create that loses a race against GC (its fresh blob reclaimed before its
manifest commits) gets BlobUnknown and retries, as a client would; a restore that loses one gets
Conflict or NotFound. Any other exception fails the test. At the end the store must be consistent.
Its `tokens` variant does the same as a non-admin user: every operation first looks its process's
API token up (`accounts.authenticate`, what every request with a token costs, last-used time
included) and acts as that user, while another process makes, rotates and revokes tokens of the
same user, each refused at once once revoked.

The thread tests pin one interleaving of two writers with statement hooks (SQLAlchemy events,
nothing of modelhangar is replaced) to show lock-order deadlocks on PostgreSQL deterministically.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from modelhangar.core import accounts, blob_access, gc
from modelhangar.core.catalog import schema as t
from modelhangar.core.config import load_settings
from modelhangar.core.errors import BlobUnknown, Conflict, NotFound
from modelhangar.core.planner import Planner, Target
from modelhangar.core.store import Actor, Store
from modelhangar.core.trash import list_trash, restore

PREFIX = "registry.ollama.ai/library/"
POOL = [b"pooled layer %d " % i + b"." * (50 * i) for i in range(8)]
CONFIG = b'{"model_format":"gguf"}'
NAMES = [f"m{i}" for i in range(6)]
OPS = 60


def open_store(home: str, url: str | None) -> Store:
    env = {
        "HANGAR_HOME": home,
        "HANGAR_GC_GRACE": "0",
        "HANGAR_REUSE_FUSE": "0",
        "HANGAR_TRASH_RETENTION": "1h",
    }
    if url:
        env["HANGAR_DATABASE_URL"] = url
    return Store(load_settings(env))


def create_model(store: Store, name: str, layers: list[bytes], actor: Actor | None = None) -> None:
    """Upload the blobs, then commit a manifest naming them (both as an Ollama client does)."""

    def desc(data: bytes, media_type: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": store.put_blob_bytes(data).digest, "size": len(data)}

    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": desc(CONFIG, "application/vnd.oci.image.config.v1+json"),
        "layers": [desc(x, "application/vnd.ollama.image.model") for x in layers],
    }
    store.put_manifest(PREFIX + name, "latest", json.dumps(doc).encode(), actor=actor)


def creator(store: Store, rng: random.Random, counts: Counter[str], actor: Callable[[], Actor]) -> None:
    name = rng.choice(NAMES)
    layers = rng.sample(POOL, rng.randint(1, 3))
    for _ in range(5):
        try:
            create_model(store, name, layers, actor())
        except BlobUnknown:  # GC reclaimed a blob we had just uploaded: upload again
            counts["blob_unknown"] += 1
            continue
        counts["created"] += 1
        return
    counts["gave_up"] += 1


def deleter(store: Store, rng: random.Random, counts: Counter[str], actor: Callable[[], Actor]) -> None:
    roll = rng.random()
    if roll < 0.5:
        plan = Planner(store).delete(
            [Target("tag", PREFIX + rng.choice(NAMES), "latest")], actor(), purge=rng.random() < 0.5
        )
        counts["deleted" if plan.executed else "not_found"] += 1
    elif roll < 0.65:
        entries = list_trash(store)
        if entries:
            try:
                restore(store, rng.choice(entries).id, actor())
                counts["restored"] += 1
            except (Conflict, NotFound):  # the name was taken again, or the entry expired meanwhile
                counts["restore_refused"] += 1
    elif roll < 0.8:
        with store.catalog.write() as conn:
            conn.execute(t.trash.update().values(expires_at=0.0))
        gc.collect(store)
        counts["expired"] += 1
    else:
        gc.collect(store)
        counts["gc"] += 1


def known_bug(e: Exception) -> str | None:
    """The name of a known core bug (each has a strict xfail test) that `e` shows, if any."""
    if isinstance(e, sa.exc.DBAPIError) and isinstance(e.orig, psycopg.errors.DeadlockDetected):
        return "deadlock"
    if isinstance(e, FileNotFoundError) and traceback.extract_tb(e.__traceback__)[-1].name == "iter_blobs":
        return "scan_race"
    return None


def keys(store: Store, rng: random.Random, counts: Counter[str], actor: Callable[[], Actor]) -> None:
    """Make a token of the user, use it, rotate or revoke it: the old one is refused at once."""
    made = accounts.add_token(store, USER, name=f"key{rng.randrange(1 << 30)}")
    assert accounts.authenticate(store, made.token, "ollama") is not None
    if rng.random() < 0.5:
        rotated = accounts.rotate_token(store, made.info.prefix)
        assert accounts.authenticate(store, rotated.token, "ollama") is not None
        accounts.revoke_token(store, rotated.info.prefix)
        assert accounts.authenticate(store, rotated.token, "ollama") is None, "a revoked token still works"
        counts["rotated"] += 1
    else:
        accounts.revoke_token(store, made.info.prefix)
        counts["revoked"] += 1
    assert accounts.authenticate(store, made.token, "ollama") is None, "a revoked token still works"


ROLES = {"creator": creator, "deleter": deleter, "keys": keys}
USER = "racer"


def worker(
    role: str, home: str, url: str | None, seed: int, token: str | None = None
) -> dict[str, int] | str:
    """Run OPS operations of one role; return their counts, or the traceback of a surprise.
    With `token`, each operation acts as the user that token says (looked up each time)."""
    counts: Counter[str] = Counter()
    rng = random.Random(seed)
    store = open_store(home, url)

    def actor() -> Actor:
        if token is None:
            return Actor()
        found = accounts.authenticate(store, token, "ollama")
        assert found is not None and found.principal == USER and not found.admin, "a valid token refused"
        return found

    try:
        for _ in range(OPS):
            try:
                ROLES[role](store, rng, counts, actor)
            except Exception as e:
                bug = known_bug(e)
                if bug is None:
                    raise
                counts[bug] += 1  # counted, not hidden: the test xfails if any occurred
    except Exception:
        return traceback.format_exc()
    finally:
        store.close()
    return dict(counts)


def check_consistent(store: Store) -> None:
    gc.collect(store)
    assert gc.fsck(store, verify=True) == []
    assert store.pending_deletions() == []
    with store.catalog.read() as conn:
        refs = conn.execute(
            sa.select(t.tags.c.manifest_digest, t.manifest_blobs.c.blob_digest).join(
                t.manifest_blobs, t.manifest_blobs.c.manifest_digest == t.tags.c.manifest_digest
            )
        ).all()
        needed = {r.blob_digest for r in conn.execute(sa.select(t.manifest_blobs.c.blob_digest))}
    for r in refs:
        assert store.blob_size(r.blob_digest) == store.blobs.size(r.blob_digest) is not None
    for rec in store.list_tags():
        content = store.get_manifest(rec.manifest_digest)
        assert content is not None
        assert json.loads(content[0])["config"]["digest"] in needed
    assert {d for d, _ in store.blobs.iter_blobs()} == needed


@pytest.mark.timeout(240)
@pytest.mark.parametrize("auth", ["anonymous", "tokens"])
def test_processes_share_one_store(fast_home: Path, db_url: str | None, auth: str) -> None:
    home = str(fast_home)
    roles = ["creator", "creator", "deleter", "deleter"]
    tokens: list[str | None] = [None] * len(roles)
    store = open_store(home, db_url)  # migrate once, before the crowd arrives
    try:
        if auth == "tokens":
            tokens = [accounts.add_user(store, USER, token_name="worker0").token]
            tokens += [accounts.add_token(store, USER, name=f"worker{i}").token for i in range(1, len(roles))]
            roles.append("keys")
            tokens.append(None)
    finally:
        store.close()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(roles), mp_context=ctx) as pool:
        futures = [
            pool.submit(worker, role, home, db_url, seed, token)
            for seed, (role, token) in enumerate(zip(roles, tokens, strict=True))
        ]
        results = [f.result(timeout=200) for f in futures]
    surprises = [r for r in results if isinstance(r, str)]
    assert surprises == [], "\n".join(surprises)
    totals: Counter[str] = Counter()
    for r in results:
        assert isinstance(r, dict)
        totals.update(r)
    assert totals["created"] > 0 and totals["deleted"] > 0, totals
    store = open_store(home, db_url)
    try:
        check_consistent(store)  # a transaction aborted by a deadlock must leave the store consistent too
        if auth == "tokens":
            assert totals["revoked"] + totals["rotated"] == OPS, totals
            used = {i.name: i for i in accounts.list_tokens(store, USER)}
            assert all(used[f"worker{i}"].last_used_at is not None for i in range(4)), used
            with store.catalog.read() as conn:
                owners = {r.owner for r in conn.execute(sa.select(t.repositories.c.owner))}
            assert owners <= {USER}, owners  # what the user created is the user's
    finally:
        store.close()
    if totals["deadlock"] or totals["scan_race"]:
        pytest.fail(
            f"known core bugs: {totals['deadlock']} PostgreSQL deadlock(s) ({DEADLOCK_1}; {DEADLOCK_2}); "
            f"{totals['scan_race']} GC scan(s) crashed on a blob unlinked under them ({SCAN_RACE})"
        )


# ---------------------------------------------------------------------- pinned interleavings

DEADLOCK_1 = (
    "lock-order inversion: put_manifest locks the repository row, then the tag row; Planner.delete "
    "locks the tag row (_lock_tags), then the repository row (release -> _drop_repository_if_empty)"
)
DEADLOCK_2 = (
    "put_manifest over an existing tag locks blob rows in two sorted batches (the new manifest's "
    "blobs, then in release -> retire_blobs the old manifest's), so not in one global digest order"
)

SCAN_RACE = (
    "LocalBlobStore.iter_blobs stats each directory entry after listing it; a blob another process "
    "unlinks in between raises FileNotFoundError out of gc.collect (and fsck)"
)


class Pause:
    """Holds one store's writer just before the first statement `match` accepts, until released."""

    def __init__(self, store: Store, match: Callable[[str, Any], bool], *, reads: bool = False) -> None:
        self.match = match
        self.reached = threading.Event()
        self.go = threading.Event()
        engine = store.catalog.read_engine if reads else store.catalog.engine
        event.listen(engine, "before_cursor_execute", self._hook)

    def _hook(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not self.reached.is_set() and self.match(statement, parameters):
            self.reached.set()
            self.go.wait(60)


class Runner(threading.Thread):
    """Runs one call in a thread and keeps what it raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.call()
        except BaseException as e:
            self.error = e


def wait_until_blocked_or_done(observer: Store, runner: Runner) -> None:
    """Until some backend of this database waits for a row lock (or `runner` finished)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 60
    while runner.is_alive() and time.monotonic() < deadline:
        with observer.catalog.read() as conn:
            if conn.execute(query).scalar():
                return
        time.sleep(0.01)


def race(observer: Store, first: Runner, pause: Pause, second: Runner) -> list[str]:
    """Start `first` until its pause, run `second` until it blocks, then let `first` go on."""
    first.start()
    assert pause.reached.wait(60)
    second.start()
    wait_until_blocked_or_done(observer, second)
    pause.go.set()
    first.join(120)
    second.join(120)
    return [f"{type(r.error).__name__}: {str(r.error).splitlines()[0]}" for r in (first, second) if r.error]


def manifest_for(store: Store, config: bytes, layers: list[bytes]) -> bytes:
    def desc(data: bytes) -> dict[str, object]:
        return {
            "mediaType": "application/octet-stream",
            "digest": store.put_blob_bytes(data).digest,
            "size": len(data),
        }

    doc = {"schemaVersion": 2, "config": desc(config), "layers": [desc(x) for x in layers]}
    return json.dumps(doc).encode()


def is_lock_of(table: str) -> Callable[[str, Any], bool]:
    return lambda stmt, _params: stmt.startswith(f"SELECT {table}.") and "FOR UPDATE" in stmt


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_put_manifest_racing_a_delete_of_the_same_tag(make_store: Callable[..., Store]) -> None:
    creator_store, deleter_store, observer = make_store(), make_store(), make_store()
    repository = PREFIX + "contested"
    creator_store.put_manifest(repository, "latest", manifest_for(creator_store, b"cfg", [b"old"]))
    new = manifest_for(creator_store, b"cfg", [b"new"])
    # The creator holds the repository row and is about to lock the tag row ...
    pause = Pause(creator_store, lambda stmt, p: is_lock_of("tags")(stmt, p))
    creator = Runner(lambda: creator_store.put_manifest(repository, "latest", new))
    # ... while the deleter locks the tag row, then waits for the repository row.
    deleter = Runner(lambda: Planner(deleter_store).delete([Target("tag", repository, "latest")], Actor()))
    assert race(observer, creator, pause, deleter) == []
    assert gc.fsck(observer) == []


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_tag_overwrite_racing_a_delete_that_shares_its_blobs(make_store: Callable[..., Store]) -> None:
    creator_store, deleter_store, observer = make_store(), make_store(), make_store()
    x, y = sorted([b"layer one", b"layer two"], key=lambda b: hashlib.sha256(b).hexdigest())
    dx = "sha256:" + hashlib.sha256(x).hexdigest()
    # R:latest names (c1, x) and is overwritten to name (c1, y); S:latest names (c2, x, y).
    creator_store.put_manifest(PREFIX + "r", "latest", manifest_for(creator_store, b"c1", [x]))
    creator_store.put_manifest(PREFIX + "s", "latest", manifest_for(creator_store, b"c2", [x, y]))
    new = manifest_for(creator_store, b"c1", [y])
    # The creator has locked y (the new manifest's blob) and is about to lock x (the old one's) ...
    pause = Pause(creator_store, lambda stmt, p: is_lock_of("blobs")(stmt, p) and dx in dict(p).values())
    creator = Runner(lambda: creator_store.put_manifest(PREFIX + "r", "latest", new))
    # ... while deleting S locks x, then waits for y: sorted order, but the creator's is not.
    deleter = Runner(lambda: Planner(deleter_store).delete([Target("tag", PREFIX + "s", "latest")], Actor()))
    assert race(observer, creator, pause, deleter) == []
    assert gc.fsck(observer) == []


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_an_upload_racing_the_second_phase_of_a_delete_keeps_its_row(
    make_store: Callable[..., Store],
) -> None:
    """The deleter drops the blob's row between the uploader's insert-if-absent and its row lock: the
    uploader inserts again instead of installing a file with no row (a 201 the next manifest refutes)."""
    deleter_store, uploader_store, observer = make_store(), make_store(), make_store()
    layer = b"a layer deleted and uploaded again at once"
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    deleter_store.put_manifest(PREFIX + "gone", "latest", manifest_for(deleter_store, b"cfg", [layer]))
    # The deleter has marked the blob `deleting`, locked its row and unlinked the file, and is about to
    # drop the row ...
    pause = Pause(
        deleter_store,
        lambda stmt, p: stmt.startswith("DELETE FROM blobs") and digest in dict(p).values(),
    )
    deleter = Runner(
        lambda: Planner(deleter_store).delete([Target("tag", PREFIX + "gone", "latest")], Actor(), purge=True)
    )
    # ... while the uploader, finding the row, waits for its lock.
    uploader = Runner(lambda: uploader_store.put_blob_bytes(layer))
    assert race(observer, deleter, pause, uploader) == []
    assert observer.blob_size(digest) == len(layer)
    observer.put_manifest(PREFIX + "back", "latest", manifest_for(observer, b"cfg", [layer]))
    assert gc.fsck(observer) == []


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_uploads_of_the_same_bytes_by_one_user_both_commit(make_store: Callable[..., Store]) -> None:
    """Both uploads record who uploaded the blob (`blob_access.record_upload`) in the transaction that
    installs it; neither sees the other's row before it commits, so the second must not insert it
    again (the token race on two servers met this as a 500)."""
    first_store, second_store, observer = make_store(), make_store(), make_store()
    bytes_ = b"one layer, uploaded twice at once by the same user"
    digest = "sha256:" + hashlib.sha256(bytes_).hexdigest()
    actor = accounts.authenticate(observer, accounts.add_user(observer, USER).token, "ollama")
    assert actor is not None

    def upload(store: Store) -> None:
        writer = store.blob_writer()
        writer.write(bytes_)
        store.commit_blob(writer, digest, also=blob_access.record_upload(store, actor, digest))

    # The first has looked for its uploader row (none yet) and is about to insert it ...
    pause = Pause(first_store, lambda stmt, _p: stmt.startswith("INSERT INTO uploader_blobs"))
    first = Runner(lambda: upload(first_store))
    # ... while the second records the same row and commits.
    second = Runner(lambda: upload(second_store))
    assert race(observer, first, pause, second) == []
    assert observer.blob_size(digest) == len(bytes_)
    assert blob_access.may_use(observer, actor, digest)


def test_fsck_beside_a_writer_sees_one_snapshot(make_store: Callable[..., Store]) -> None:
    """fsck reads blobs, then references: a model created in between is not a `blob-missing` problem."""
    writer, checker = make_store(), make_store()
    writer.put_manifest(PREFIX + "before", "latest", manifest_for(writer, b"cfg", [b"old layer"]))
    pause = Pause(
        checker, lambda stmt, _p: "manifest_blobs.blob_digest" in stmt and "DISTINCT" in stmt, reads=True
    )
    found: list[Any] = []
    fsck = Runner(lambda: found.extend(gc.fsck(checker)))
    fsck.start()
    assert pause.reached.wait(60)
    writer.put_manifest(PREFIX + "during", "latest", manifest_for(writer, b"cfg", [b"new layer"]))
    pause.go.set()
    fsck.join(60)
    assert fsck.error is None and found == []
