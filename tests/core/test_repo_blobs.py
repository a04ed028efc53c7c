"""Repository blob links: what a repository may serve, mounts, and explicit blob deletes."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import sqlalchemy as sa

from modelhangar.core import gc, repo_blobs, trash
from modelhangar.core.catalog import schema as t
from modelhangar.core.planner import Target
from modelhangar.core.store import Actor

if TYPE_CHECKING:
    from conftest import Kit, MakeKit

A, B, C = (f"registry.ollama.ai/library/{n}" for n in "abc")  # what Kit.create("a") names
ACTOR = Actor(face="oci")


def upload(kit: Kit, repository: str, data: bytes) -> str:
    """A blob uploaded into `repository`, as the registry face installs one."""
    w = kit.store.blob_writer()
    w.write(data)
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    return kit.store.commit_blob(w, d, also=repo_blobs.linker(kit.store, repository, d)).digest


def links(kit: Kit) -> set[tuple[str, str]]:
    q = sa.select(t.repositories.c.name, t.repo_blobs.c.blob_digest).join(t.repositories)
    with kit.store.catalog.read() as conn:
        return {(r.name, r.blob_digest) for r in conn.execute(q)}


def touched_at(kit: Kit, digest: str) -> float:
    [row] = kit.rows(t.blobs, t.blobs.c.digest == digest)
    return float(row.touched_at)


def test_a_blob_is_visible_where_it_was_uploaded_or_named(kit: Kit) -> None:
    loose = upload(kit, A, b"loose")
    kit.create("b", [b"layer"])  # named by a manifest of lib/b
    layer = kit.blob(b"layer")
    assert repo_blobs.blob_size(kit.store, A, loose) == 5
    assert repo_blobs.blob_size(kit.store, A.upper(), loose) == 5  # names match case-insensitively
    assert repo_blobs.blob_size(kit.store, B, loose) is None
    assert repo_blobs.blob_size(kit.store, B, layer) == 5
    assert repo_blobs.blob_size(kit.store, A, layer) is None
    assert repo_blobs.blob_size(kit.store, C, loose) is None
    assert repo_blobs.repository_known(kit.store, A) and repo_blobs.repository_known(kit.store, B)
    assert not repo_blobs.repository_known(kit.store, C)


def test_a_head_claims_only_a_blob_the_repository_can_serve(kit: Kit) -> None:
    d = upload(kit, A, b"claimed")
    kit.execute(t.blobs.update().values(touched_at=1.0))
    assert repo_blobs.claim(kit.store, B, d) is None
    assert touched_at(kit, d) == 1.0
    assert repo_blobs.claim(kit.store, A, d) == 7
    assert touched_at(kit, d) > 1.0


def test_a_head_writes_its_touch_only_when_the_stored_one_is_stale(make_kit: MakeKit) -> None:
    """A storm of HEADs costs one write per touch granularity (core/recency.py); a blob claimed by a
    HEAD that did not write is still within its fuse for a delete (the delete's allowance covers
    the granularity), so its bytes stay."""
    kit = make_kit(HANGAR_REUSE_FUSE="30s")
    d = upload(kit, A, b"stormed")
    stale = 1.0
    kit.execute(t.blobs.update().values(touched_at=stale))
    assert repo_blobs.claim(kit.store, A, d) == 7
    first = touched_at(kit, d)
    assert first > stale  # a stale touch is written
    for _ in range(50):
        assert repo_blobs.claim(kit.store, A, d) == 7
    assert touched_at(kit, d) == first  # a fresh one is not rewritten
    assert repo_blobs.claim(kit.store, B, d) is None  # nor does a repository that cannot serve it see it
    result = repo_blobs.withdraw(kit.store, A, d, ACTOR)
    assert result.outcome == "deleted" and result.blob == "recent"
    assert d in kit.blob_files()


def test_a_mount_needs_the_blob_in_its_source(kit: Kit) -> None:
    d = upload(kit, A, b"mounted")
    upload(kit, B, b"other")
    assert repo_blobs.mount(kit.store, C, B, d) is None
    assert not repo_blobs.repository_known(kit.store, C)  # a refused mount leaves no repository behind
    assert repo_blobs.mount(kit.store, C, A, d) == 7
    assert repo_blobs.blob_size(kit.store, C, d) == 7
    assert (C, d) in links(kit)


def test_links_do_not_keep_a_blob_and_go_with_its_row(kit: Kit) -> None:
    d = upload(kit, A, b"collected")
    upload(kit, B, b"collected")
    assert links(kit) == {(A, d), (B, d)}
    assert d in gc.collect(kit.store).blobs
    assert links(kit) == set() and d not in kit.blob_files()
    assert repo_blobs.blob_size(kit.store, A, d) is None


def test_delete_drops_the_link_and_the_blob_once_nothing_uses_it(kit: Kit) -> None:
    d = upload(kit, A, b"twice")
    upload(kit, B, b"twice")
    assert repo_blobs.withdraw(kit.store, A, d, ACTOR).outcome == "deleted"
    assert repo_blobs.blob_size(kit.store, A, d) is None
    assert repo_blobs.blob_size(kit.store, B, d) == 5  # B's link keeps it there
    assert d in kit.blob_files()
    assert not repo_blobs.repository_known(kit.store, A)
    result = repo_blobs.withdraw(kit.store, B, d, ACTOR)
    assert result.outcome == "deleted" and result.blob == "deleted"
    assert d not in kit.blob_files() and links(kit) == set()
    [entry] = [a for a in kit.audit() if a.action == "delete-blob"]
    assert entry.target == f"{B}@{d}" and entry.actor == "local"
    assert repo_blobs.withdraw(kit.store, B, d, ACTOR).outcome == "unknown"
    assert repo_blobs.withdraw(kit.store, C, d, ACTOR).outcome == "unknown"


def test_a_blob_a_manifest_of_the_repository_names_is_refused(kit: Kit) -> None:
    digest = kit.create("a", [b"named"])
    layer = kit.blob(b"named")
    upload(kit, A, b"named")  # linked too: the manifest still wins
    before = kit.snapshot()
    result = repo_blobs.withdraw(kit.store, A, layer, ACTOR)
    assert result.outcome == "referenced" and result.manifests == [digest]
    assert kit.snapshot() == before
    assert repo_blobs.withdraw(kit.store, B, layer, ACTOR).outcome == "unknown"


def test_a_recent_writer_defers_the_bytes_not_the_delete(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_REUSE_FUSE="30s")
    d = upload(kit, A, b"recent")
    result = repo_blobs.withdraw(kit.store, A, d, ACTOR)
    assert result.outcome == "deleted" and result.blob == "recent"
    assert repo_blobs.blob_size(kit.store, A, d) is None
    assert d in kit.blob_files()


def test_a_trashed_manifest_keeps_the_blob_and_restoring_it_brings_it_back(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1d")
    layer = upload(kit, A, b"trashed layer")
    digest, _ = kit.store.put_manifest(A, "v1", kit.manifest([b"trashed layer"]))
    plan = kit.planner.delete([Target("manifest", A, digest)], ACTOR)
    assert plan.ok and plan.trash_ids
    assert repo_blobs.blob_size(kit.store, A, layer) == 13  # still linked
    assert repo_blobs.withdraw(kit.store, A, layer, ACTOR).outcome == "deleted"
    assert repo_blobs.blob_size(kit.store, A, layer) is None
    assert layer in kit.blob_files()  # the trash entry holds it
    trash.restore(kit.store, plan.trash_ids[0], Actor())
    assert repo_blobs.blob_size(kit.store, A, layer) == 13


def test_deleting_a_whole_repository_drops_its_links(kit: Kit) -> None:
    loose = upload(kit, A, b"loose in a")
    kit.create("a", [b"layer of a"])
    plan = kit.planner.delete([Target("repository", A)], Actor())
    assert plan.executed
    assert repo_blobs.blob_size(kit.store, A, loose) is None
    assert links(kit) == set()
