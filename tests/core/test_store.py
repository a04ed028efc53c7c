"""The store: committing blobs, manifests byte for byte, tags, copies and overwrites."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from harness import wait_until
from modelhangar.core import listing
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.errors import BlobUnknown, CatalogUnavailable, DigestMismatch, NotFound
from modelhangar.core.gc import fsck
from modelhangar.core.planner import Target
from modelhangar.core.store import Actor, Store

if TYPE_CHECKING:
    from conftest import Kit

PREFIX = "registry.ollama.ai/library/"
CONFIG = b'{"model_format":"gguf","model_family":"test"}'


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tmp_files(store: Store) -> list[str]:
    return sorted(p.name for p in store.blobs.tmp_dir.iterdir())


def test_blob_commit_created_then_reused(store: Store, kit: Kit) -> None:
    first = store.put_blob_bytes(b"layer bytes")
    assert (first.digest, first.size, first.created) == (digest_of(b"layer bytes"), 11, True)
    assert kit.blob_path(first.digest).read_bytes() == b"layer bytes"
    [row] = kit.rows(t.blobs)
    assert (row.digest, row.size, row.state) == (first.digest, 11, "present")

    again = store.put_blob_bytes(b"layer bytes", expected=first.digest.replace(":", "-"))
    assert (again.digest, again.size, again.created) == (first.digest, 11, False)
    [row2] = kit.rows(t.blobs)
    assert row2.touched_at >= row.touched_at  # reuse counts as a write
    assert store.blob_size(first.digest) == 11
    assert store.reuse_blob(first.digest) == 11
    assert store.read_blob(first.digest) == b"layer bytes"
    assert tmp_files(store) == []  # the second upload's temp file is gone


def test_streamed_blob_commit(store: Store, kit: Kit) -> None:
    w = store.blob_writer()
    for chunk in (b"a" * 1000, b"b" * 10, b""):
        w.write(chunk)
    c = store.commit_blob(w, digest_of(b"a" * 1000 + b"b" * 10))
    assert (c.size, c.created) == (1010, True)
    assert kit.blob_files() == {c.digest: 1010}


def test_digest_mismatch_keeps_nothing(store: Store, kit: Kit) -> None:
    claimed = digest_of(b"what the client said")
    with pytest.raises(DigestMismatch) as info:
        store.put_blob_bytes(b"what it sent", expected=claimed)
    assert (info.value.expected, info.value.actual) == (claimed, digest_of(b"what it sent"))
    w = store.blob_writer()
    w.write(b"streamed")
    with pytest.raises(DigestMismatch):
        store.commit_blob(w, claimed)
    assert kit.rows(t.blobs) == []
    assert list(store.settings.blobs_dir.iterdir()) == []
    assert tmp_files(store) == []
    assert store.blob_size(claimed) is None
    assert store.blob_size(digest_of(b"what it sent")) is None
    assert store.reuse_blob(digest_of(b"streamed")) is None


def test_put_manifest_with_missing_blob_changes_nothing(store: Store, kit: Kit) -> None:
    kit.create("existing", [b"one"])
    manifest = kit.manifest([b"two"])
    absent = digest_of(b"never uploaded")
    doc = json.loads(manifest)
    doc["layers"].append({"mediaType": "application/vnd.ollama.image.model", "digest": absent, "size": 3})
    content = json.dumps(doc).encode()
    before = kit.snapshot()
    with pytest.raises(BlobUnknown) as info:
        store.put_manifest(PREFIX + "new", "latest", content)
    assert info.value.digests == [absent]
    with pytest.raises(BlobUnknown):  # also over an existing tag, in an existing repository
        store.put_manifest(PREFIX + "existing", "latest", content)
    assert kit.snapshot() == before
    assert store.get_tag(PREFIX + "new", "latest") is None
    assert store.get_manifest(digest_of(content)) is None


@pytest.mark.parametrize("how", ["deleting", "file-gone", "no-row"])
def test_a_blob_that_looks_absent_cannot_be_referenced(store: Store, kit: Kit, how: str) -> None:
    d = kit.blob(b"going away")
    if how == "deleting":  # a deleter marked it and has not unlinked it yet
        kit.execute(t.blobs.update().where(t.blobs.c.digest == d).values(state="deleting"))
    elif how == "file-gone":
        kit.blob_path(d).unlink()
    else:
        kit.execute(t.blobs.delete().where(t.blobs.c.digest == d))
    content = kit.manifest([]).replace(b'"layers":[]', b'"layers":[{"digest":"%s","size":10}]' % d.encode())
    with pytest.raises(BlobUnknown) as info:
        store.put_manifest(PREFIX + "m", "latest", content)
    assert info.value.digests == [d]
    assert store.list_tags() == []


def test_manifest_bytes_are_stored_byte_for_byte(store: Store, kit: Kit) -> None:
    cfg, layer = kit.blob(b"{}"), kit.blob(b"weights")
    content = (
        b'{ "layers" : [ {"size": 7, "digest": "%s", "mediaType": "application/vnd.ollama.image.model"} ],\n'
        b'  "config": {"digest": "%s", "size": 2, "mediaType": "application/vnd.oci.image.config.v1+json"},'
        b'\t"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",'
        b' "extra": "\\u00e9t\\u00e9"}\r\n'
    ) % (layer.encode(), cfg.encode())
    digest, released = store.put_manifest(PREFIX + "verbatim", "v1", content)
    assert digest == digest_of(content)
    assert released.blobs == [] and released.manifests == []
    assert store.get_manifest(digest) == (content, "application/vnd.docker.distribution.manifest.v2+json")
    rec = store.get_tag(PREFIX + "verbatim", "v1")
    assert rec is not None
    assert (rec.manifest_digest, rec.total_size) == (digest, 9)
    assert store.manifest_in_repository(PREFIX + "VERBATIM", digest)


def test_get_tag_is_case_insensitive(store: Store, kit: Kit) -> None:
    digest = kit.create("MixedCase", [b"w"], tag="Latest")
    for r, tag in [("MixedCase", "Latest"), ("mixedcase", "latest"), ("MIXEDCASE", "LATEST")]:
        rec = store.get_tag(PREFIX + r, tag)
        assert rec is not None
        assert (rec.repository, rec.tag, rec.manifest_digest) == (PREFIX + "MixedCase", "Latest", digest)
    assert store.get_tag(PREFIX + "mixedcase", "other") is None
    assert store.get_tag(PREFIX + "other", "latest") is None
    # Another spelling of the same name is the same tag: overwriting keeps one tag, one repository.
    kit.create("mixedcase", [b"w2"], tag="LATEST")
    assert len(store.list_tags()) == 1
    assert store.list_repositories() == [PREFIX + "MixedCase"]


def test_copy_tag_shares_blobs(store: Store, kit: Kit) -> None:
    digest = kit.create("src", [b"big weights", b"template"])
    files = kit.blob_files()
    rec = store.copy_tag(PREFIX + "src", "latest", PREFIX + "dst", "v2")
    assert (rec.repository, rec.tag, rec.manifest_digest) == (PREFIX + "dst", "v2", digest)
    assert kit.blob_files() == files
    assert len(kit.rows(t.manifests)) == 1
    with pytest.raises(NotFound):
        store.copy_tag(PREFIX + "nope", "latest", PREFIX + "dst2", "latest")
    plan = kit.delete("src")
    assert plan.executed and plan.blobs == [] and plan.manifests == []
    assert kit.blob_files() == files
    assert store.get_tag(PREFIX + "dst", "v2") is not None
    assert fsck(store, verify=True) == []


def test_tag_overwrite_releases_only_unshared_blobs(store: Store, kit: Kit) -> None:
    old = kit.create("a", [b"shared", b"own old"])
    kit.create("b", [b"shared", b"b only"])
    new, released = store.put_manifest(PREFIX + "a", "latest", kit.manifest([b"shared", b"own new"]))
    assert released.manifests == [old]
    assert released.blobs == [digest_of(b"own old")]
    assert released.bytes == len(b"own old")
    assert store.get_manifest(old) is None
    files = kit.blob_files()
    assert digest_of(b"own old") not in files
    assert {digest_of(b"shared"), digest_of(b"own new"), digest_of(b"b only")} <= set(files)
    rec = store.get_tag(PREFIX + "a", "latest")
    assert rec is not None and rec.manifest_digest == new
    assert fsck(store, verify=True) == []


def test_tag_overwrite_keeps_a_manifest_another_tag_holds(store: Store, kit: Kit) -> None:
    old = kit.create("a", [b"own old"])
    store.copy_tag(PREFIX + "a", "latest", PREFIX + "a", "pinned")
    _, released = store.put_manifest(PREFIX + "a", "latest", kit.manifest([b"own new"]))
    assert (released.manifests, released.blobs) == ([], [])
    assert store.get_manifest(old) is not None
    assert digest_of(b"own old") in kit.blob_files()
    # Re-pointing a tag at the manifest it already has releases nothing either.
    stored = store.get_manifest(old)
    assert stored is not None
    _, again = store.put_manifest(PREFIX + "a", "pinned", stored[0])
    assert (again.manifests, again.blobs) == ([], [])
    assert fsck(store) == []


def test_list_tags_newest_first(store: Store, kit: Kit) -> None:
    for name in ("one", "two", "three"):
        kit.create(name, [name.encode()])
    assert [r.repository for r in store.list_tags()] == [PREFIX + n for n in ("three", "two", "one")]
    kit.create("one", [b"one, updated"])
    store.copy_tag(PREFIX + "two", "latest", PREFIX + "two", "copy")
    assert [(r.repository, r.tag) for r in store.list_tags()] == [
        (PREFIX + "two", "copy"),
        (PREFIX + "one", "latest"),
        (PREFIX + "three", "latest"),
        (PREFIX + "two", "latest"),
    ]
    assert [r.tag for r in store.list_tags(PREFIX + "TWO")] == ["copy", "latest"]
    assert store.list_repositories() == sorted(PREFIX + n for n in ("one", "two", "three"))


def test_a_deleted_manifest_can_be_put_again(store: Store, kit: Kit) -> None:
    content = kit.manifest([b"w"])
    digest, _ = store.put_manifest(PREFIX + "m", "latest", content)
    assert kit.delete("m").executed
    assert kit.blob_files() == {}
    with pytest.raises(BlobUnknown):
        store.put_manifest(PREFIX + "m", "latest", content)
    content = kit.manifest([b"w"])  # uploads the blobs again
    assert store.put_manifest(PREFIX + "m", "latest", content)[0] == digest
    with store.catalog.read() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(t.manifest_blobs)).scalar()
    assert n == 2
    assert fsck(store, verify=True) == []


def index_of(children: list[bytes]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest_of(c),
                "size": len(c),
            }
            for c in children
        ],
    }
    return json.dumps(doc).encode()


def test_an_index_holds_its_child_manifests(store: Store, kit: Kit) -> None:
    repository = PREFIX + "multiarch"
    amd, arm = kit.manifest([b"amd64 weights"]), kit.manifest([b"arm64 weights"])
    missing_child = index_of([amd])
    with pytest.raises(BlobUnknown) as info:
        store.put_manifest(repository, "latest", missing_child)
    assert info.value.digests == [digest_of(amd)]
    for child in (amd, arm):
        store.put_manifest(repository, None, child)  # untagged members of the repository
    index, _ = store.put_manifest(repository, "latest", index_of([amd, arm]))
    assert fsck(store, verify=True) == []
    plan = kit.delete("multiarch")  # the tag goes, and the index; the children stay members
    assert plan.manifests == [index] and plan.blobs == []
    assert store.get_manifest(digest_of(amd)) is not None
    plan = kit.planner.delete([Target("repository", repository)], Actor())
    assert plan.executed
    assert sorted(plan.manifests) == sorted([digest_of(amd), digest_of(arm)])
    assert kit.blob_files() == {}
    assert kit.rows(t.manifests) == [] and kit.rows(t.manifest_children) == []
    assert fsck(store) == []


def test_deleting_a_repository_releases_children_through_its_index(store: Store, kit: Kit) -> None:
    repository = PREFIX + "multiarch"
    amd, arm = kit.manifest([b"amd64 weights", b"shared"]), kit.manifest([b"arm64 weights", b"shared"])
    for child in (amd, arm):
        store.put_manifest(repository, None, child)
    store.put_manifest(repository, "v1", index_of([amd, arm]))
    kit.create("other", [b"shared"])
    plan = kit.planner.delete([Target("repository", repository)], Actor())
    assert len(plan.manifests) == 3
    assert sorted(plan.blobs) == sorted([digest_of(b"amd64 weights"), digest_of(b"arm64 weights")])
    assert set(kit.blob_files()) == {digest_of(b"shared"), digest_of(CONFIG)}
    assert fsck(store, verify=True) == []


def test_the_streamed_listing_is_every_tag_newest_first_across_batches(kit: Kit) -> None:
    for i in range(5):
        kit.create(f"m{i}", [b"layer %d" % i])
    records = kit.store.list_tags()
    batches = list(kit.store.iter_listing(batch=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    entries = [json.loads(e) for b in batches for e in b]
    assert [(e["name"], e["digest"], e["size"]) for e in entries] == [
        (f"{r.repository.rsplit('/', 1)[1]}:{r.tag}", r.manifest_digest[7:], r.total_size) for r in records
    ]


def test_listing_entries_are_rendered_from_the_catalog_when_missing_or_stale(kit: Kit) -> None:
    """Rows without an entry (a catalog from before 0014) or whose time changed outside the store list
    exactly as rows the store rendered; `backfill` then writes the same entries."""
    for i in range(3):
        kit.create(f"m{i}", [b"layer %d" % i])
    rendered = [e for b in kit.store.iter_listing() for e in b]
    kit.execute(t.tags.update().where(t.tags.c.name_key == "latest").values(listing=None, listing_at=None))
    assert [e for b in kit.store.iter_listing(batch=2) for e in b] == rendered
    kit.execute(t.tags.update().values(modified_at=t.tags.c.modified_at - 86400))
    older = [e for b in kit.store.iter_listing() for e in b]
    assert [json.loads(e)["name"] for e in older] == [json.loads(e)["name"] for e in rendered]
    assert all(a != b for a, b in zip(older, rendered, strict=True))  # each shows its new time
    assert listing.backfill(kit.store.catalog.write) == 3
    assert listing.backfill(kit.store.catalog.write) == 0
    with kit.store.catalog.read() as conn:
        stored = [
            r[0] for r in conn.execute(sa.select(t.tags.c.listing).order_by(t.tags.c.modified_at.desc()))
        ]
    assert stored == older


def test_repository_keys_page_in_byte_order(kit: Kit) -> None:
    names = ["a_b", "ab", "a-b", "a.b", "a/b", "Zed", "a"]
    for n in names:
        kit.create(n, [b"layer of " + n.encode()])
    kit.store.put_blob_bytes(b"x")
    everything = kit.store.repository_keys(PREFIX)
    assert everything == sorted(PREFIX + n.lower() for n in names)  # Python's order on every backend
    assert kit.store.repository_keys(PREFIX, limit=3) == everything[:3]
    assert kit.store.repository_keys(PREFIX, everything[2], 2) == everything[3:5]
    assert kit.store.repository_keys(PREFIX + "a", limit=1) == [PREFIX + "a"]
    assert kit.store.repository_keys("elsewhere/") == []
    assert kit.store.repository_keys("") == everything  # no prefix: every key
    assert kit.store.repository_keys(PREFIX + "a%") == []  # the prefix is literal


def test_repository_keys_are_what_each_reader_may_see(kit: Kit) -> None:
    """Pages and the streamed whole agree, for the store, an anonymous reader, a user and a member of
    an organisation (each reads through its own variant of the statement)."""
    from modelhangar.core import accounts

    accounts.add_user(kit.store, "ann")
    accounts.add_user(kit.store, "bob")
    accounts.add_org(kit.store, "crew", ["bob"])
    kit.create("open", [b"o"])
    kit.create("ann/mine", [b"a"], owner="ann", visibility="private")
    kit.create("crew/ours", [b"c"], owner="crew", visibility="private")
    readers = {
        "store": (None, ["ann/mine", "crew/ours", "open"]),
        "anonymous": (Actor(name="anonymous", face="oci", admin=False), ["open"]),
        "ann": (Actor(name="ann", face="oci", admin=False, principal="ann"), ["ann/mine", "open"]),
        "bob": (
            Actor(name="bob", face="oci", admin=False, principal="bob", orgs=frozenset({"crew"})),
            ["crew/ours", "open"],
        ),
    }
    for who, (actor, names) in readers.items():
        keys = [PREFIX + n for n in names]
        assert kit.store.repository_keys(PREFIX, actor=actor) == keys, who
        assert kit.store.repository_keys(PREFIX, keys[0], 1, actor=actor) == keys[1:2], who
        streamed = kit.store.iter_repository_keys(PREFIX, batch=1, actor=actor)
        assert [k for batch in streamed for k in batch] == keys, who


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_read_survives_a_dropped_postgresql_connection(kit: Kit) -> None:
    """The pool does not ping before each use; a read on a connection the server dropped runs again."""
    digest = kit.blob(b"still here")
    assert kit.store.blob_size(digest) == len(b"still here")  # a pooled connection now exists
    with kit.store.catalog.engine.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    assert kit.store.blob_size(digest) == len(b"still here")


KILL_SELF = "SELECT pg_terminate_backend(pg_backend_pid())"


def terminated(catalog: Any, pid: int) -> None:
    """End the backend `pid` from a connection of the test's own, and wait until it is gone."""
    import psycopg

    libpq = catalog.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        gone = "SELECT pg_stat_clear_snapshot(), count(*) FROM pg_stat_activity WHERE pid = %s"
        assert wait_until(lambda: admin.execute(gone, (pid,)).fetchone()[1] == 0)  # type: ignore[index]


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_connection_lost_in_a_transaction_changes_nothing_and_is_run_again(kit: Kit) -> None:
    """A write whose connection goes (a restart, a failover) is `CatalogUnavailable`, which every face
    answers 503; the database rolled it back. A `retrying` operation runs again and then commits once
    (README, "Safety rules")."""
    catalog = kit.store.catalog
    rows = t.store_settings
    with pytest.raises(CatalogUnavailable) as lost, catalog.write() as conn:
        conn.execute(rows.insert().values(key="lost", value="1"))
        conn.exec_driver_sql(KILL_SELF)
    assert not lost.value.committing
    assert "lost" not in [r.key for r in kit.rows(rows)]  # rolled back with the connection
    attempts: list[int] = []

    @retrying
    def put(name: str) -> None:
        with catalog.transaction() as (conn, trans):
            attempts.append(1)
            conn.execute(rows.insert().values(key=name, value=str(len(attempts))))
            if len(attempts) == 1:
                conn.exec_driver_sql(KILL_SELF)
            trans.commit()

    put("kept")
    assert len(attempts) == 2
    assert [(r.key, r.value) for r in kit.rows(rows) if r.key == "kept"] == [("kept", "2")]
    with catalog.read() as conn:  # and the pool hands out live connections again
        assert conn.execute(sa.select(rows.c.value).where(rows.c.key == "kept")).scalar() == "2"


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_an_operation_that_committed_is_not_run_again_when_its_connection_goes_after(kit: Kit) -> None:
    catalog = kit.store.catalog
    attempts: list[int] = []

    @retrying
    def two_steps() -> None:
        attempts.append(1)
        with catalog.write() as conn:
            conn.execute(t.store_settings.insert().values(key=f"step{len(attempts)}", value="1"))
        with catalog.write() as conn:
            conn.exec_driver_sql(KILL_SELF)

    with pytest.raises(CatalogUnavailable):
        two_steps()
    assert len(attempts) == 1  # the first step is not made twice
    assert [r.key for r in kit.rows(t.store_settings) if r.key.startswith("step")] == ["step1"]


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_delete_whose_second_phase_meets_no_database_stands_and_gc_finishes_it(kit: Kit) -> None:
    """The delete committed (its first phase): it is reported as done, never run again (which would
    answer 404 for it), and the blobs it freed are unlinked by the next GC round (README, "Safety
    rules")."""
    from modelhangar.core import gc

    kit.create("gone", [b"only the deleted model has this layer"])
    layer = digest_of(b"only the deleted model has this layer")

    def lose_connection(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("DELETE FROM blobs"):  # the second phase, every try
            cursor.execute(KILL_SELF)

    sa.event.listen(kit.store.catalog.engine, "before_cursor_execute", lose_connection)
    try:
        plan = kit.planner.delete([Target("repository", PREFIX + "gone")], Actor(), purge=True)
        assert gc.collect(kit.store).finished == []  # a GC round meeting no database says so
    finally:
        sa.event.remove(kit.store.catalog.engine, "before_cursor_execute", lose_connection)
    assert plan.executed and layer in plan.blobs
    assert kit.store.list_repositories() == []
    assert layer in kit.store.pending_deletions()  # left marked deleting (with the config and manifest)
    assert layer in gc.collect(kit.store).finished
    assert kit.store.pending_deletions() == [] and not kit.blob_path(layer).exists()
    assert fsck(kit.store) == []


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_connection_lost_while_committing_is_not_run_again(kit: Kit) -> None:
    """Whether a commit whose connection went took effect is unknown: `retrying` does not run it
    again (it might apply twice), and the error says to look before retrying."""
    catalog = kit.store.catalog
    attempts: list[int] = []

    @retrying
    def put() -> None:
        with catalog.write() as conn:
            attempts.append(1)
            conn.execute(t.store_settings.insert().values(key="maybe", value="1"))
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            terminated(catalog, int(pid))  # the backend goes before the COMMIT reaches it

    with pytest.raises(CatalogUnavailable) as lost:
        put()
    assert lost.value.committing and "may or may not" in str(lost.value)
    assert len(attempts) == 1
