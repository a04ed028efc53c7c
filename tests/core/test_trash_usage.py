"""The trash (restore as it was, or refuse) and disk usage (what deleting a model would free)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelhangar.core import gc
from modelhangar.core.catalog import schema as t
from modelhangar.core.errors import Conflict, NotFound
from modelhangar.core.planner import Target, unique_sizes
from modelhangar.core.store import Actor, Store
from modelhangar.core.trash import find_entry, list_trash, restore
from modelhangar.core.usage import disk_usage

if TYPE_CHECKING:
    from conftest import FreshStore, Kit, MakeKit

CONFIG = b'{"model_format":"gguf","model_family":"test"}'

PREFIX = "registry.ollama.ai/library/"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def tkit(make_kit: MakeKit) -> Kit:
    """A kit whose deletes go to a trash kept for an hour."""
    return make_kit(HANGAR_TRASH_RETENTION="1h")


def test_restore_brings_back_the_same_digest_and_times(tkit: Kit) -> None:
    kit = tkit
    digest = kit.create("m", [b"weights"], tag="Q4")
    kit.create("other", [b"weights"])
    kit.execute(t.tags.update().values(created_at=1000.5, modified_at=2000.25))  # three distinct times
    kit.store.mark_used(PREFIX + "m", "q4")
    before = kit.store.get_tag(PREFIX + "m", "Q4")
    assert before is not None and (before.created_at, before.modified_at) == (1000.5, 2000.25)
    files = kit.blob_files()
    plan = kit.delete("m", "q4")
    assert kit.store.get_tag(PREFIX + "m", "Q4") is None
    entry = find_entry(kit.store, f"{PREFIX}M:q4")
    assert (entry.id, entry.manifest_digest, entry.tag) == (plan.trash_ids[0], digest, "Q4")
    assert find_entry(kit.store, str(entry.id)) == entry
    restored = restore(kit.store, entry.id, Actor())
    assert (restored.repository, restored.tag, restored.manifest_digest) == (PREFIX + "m", "Q4", digest)
    after = kit.store.get_tag(PREFIX + "m", "Q4")
    assert after == before
    assert list_trash(kit.store) == []
    assert kit.blob_files() == files
    assert gc.fsck(kit.store, verify=True) == []
    with pytest.raises(NotFound):
        restore(kit.store, entry.id, Actor())
    with pytest.raises(NotFound):
        find_entry(kit.store, "nothing:here")
    # Restored, it is an ordinary model again (its only layer is shared with "other").
    plan = kit.delete("m", "Q4", purge=True)
    assert plan.executed and plan.blobs == []


def test_restore_is_refused_when_the_name_is_taken_again(tkit: Kit) -> None:
    kit = tkit
    old = kit.create("m", [b"old weights"])
    [entry_id] = kit.delete("m").trash_ids
    new = kit.create("m", [b"new weights"])
    before = kit.snapshot()
    with pytest.raises(Conflict):
        restore(kit.store, entry_id, Actor())
    assert kit.snapshot() == before
    rec = kit.store.get_tag(PREFIX + "m", "latest")
    assert rec is not None and rec.manifest_digest == new
    kit.delete("m", purge=True)
    restore(kit.store, entry_id, Actor())
    rec = kit.store.get_tag(PREFIX + "m", "latest")
    assert rec is not None and rec.manifest_digest == old
    assert gc.fsck(kit.store, verify=True) == []


def test_restore_after_the_repository_was_dropped(tkit: Kit) -> None:
    kit = tkit
    kit.create("solo", [b"w"], owner="alice")
    kit.create("solo2", [b"w2"])
    [a] = kit.delete("solo").trash_ids
    [b] = kit.delete("solo2").trash_ids
    assert kit.store.list_repositories() == []
    restore(kit.store, a, Actor())
    restore(kit.store, b, Actor())
    assert kit.models() == {PREFIX + "solo:latest", PREFIX + "solo2:latest"}
    rec = kit.store.get_tag(PREFIX + "solo", "latest")
    assert rec is not None and rec.owner == "alice"
    assert gc.fsck(kit.store, verify=True) == []


def test_an_expired_entry_cannot_be_restored(tkit: Kit) -> None:
    kit = tkit
    kit.create("m", [b"w"])
    [entry_id] = kit.delete("m").trash_ids
    kit.execute(t.trash.update().values(expires_at=time.time() - 1))
    assert gc.collect(kit.store).expired_trash == [PREFIX + "m:latest"]
    with pytest.raises(NotFound):
        restore(kit.store, entry_id, Actor())
    assert kit.blob_files() == {}


def build_shared_store(kit: Kit) -> None:
    kit.create("a", [b"shared by a and b", b"a alone"])
    kit.create("b", [b"shared by a and b", b"b alone", b"b and trash"])
    kit.store.copy_tag(PREFIX + "a", "latest", PREFIX + "a-copy", "latest")
    kit.create("d", [b"d alone, big" * 100])
    kit.create("gone", [b"b and trash", b"only in trash"])
    kit.delete("gone")


def test_unique_size_is_what_a_delete_frees(tkit: Kit) -> None:
    kit = tkit
    build_shared_store(kit)
    usage = disk_usage(kit.store)
    by_name = {f"{m.repository}:{m.tag}": m for m in usage.models}
    assert set(by_name) == kit.models()
    for name, m in by_name.items():
        preview = kit.planner.delete([kit_target(name)], Actor(), dry_run=True, purge=True)
        assert preview.bytes_freed == m.unique_size, name
        assert m.size == m.unique_size + m.shared_size
    assert by_name[PREFIX + "a:latest"].unique_size == 0  # its manifest is shared with a-copy
    a = by_name[PREFIX + "a:latest"]  # everyone shares the config blob
    assert a.shared_with == [PREFIX + n + ":latest" for n in ("a-copy", "b", "d")]
    assert a.shared_with_count == 3
    assert by_name[PREFIX + "b:latest"].unique_size == len(b"b alone")
    assert by_name[PREFIX + "d:latest"].unique_size == len(b"d alone, big" * 100)
    # And a real delete frees exactly that, on disk.
    files = kit.blob_files()
    plan = kit.delete("b", purge=True)
    assert plan.bytes_freed == by_name[PREFIX + "b:latest"].unique_size
    assert sum(files.values()) - sum(kit.blob_files().values()) == plan.bytes_freed


def test_unique_size_follows_the_planner_for_a_manifest_held_by_another_repository(tkit: Kit) -> None:
    """The manifest is also pushed by digest into another repository: deleting the tag frees nothing."""
    kit = tkit
    content = kit.manifest([b"weights of m"])
    kit.store.put_manifest(PREFIX + "m", "latest", content)
    kit.store.put_manifest(PREFIX + "elsewhere", None, content)
    [m] = [x for x in disk_usage(kit.store).models if x.repository == PREFIX + "m"]
    preview = kit.planner.delete([Target("tag", PREFIX + "m", "latest")], Actor(), dry_run=True, purge=True)
    assert m.unique_size == preview.bytes_freed == 0


def test_every_byte_is_explained(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h", HANGAR_REUSE_FUSE="30s", HANGAR_GC_GRACE="1h")
    kit.create("live", [b"live layer"])
    kit.create("trashed", [b"trashed layer"])
    kit.delete("trashed")
    kit.create("purged", [b"purged layer"])
    kit.delete("purged", purge=True)  # just created: its blobs wait for the reuse fuse
    kit.blob(b"uploaded, no manifest yet")
    content = kit.manifest([b"untagged layer"])
    kit.store.put_manifest(PREFIX + "digest-only", None, content)
    usage = disk_usage(kit.store)
    files = kit.blob_files()
    assert usage.total == sum(files.values())
    b = usage.breakdown
    assert b["models"] == len(b"live layer") + len(CONFIG)
    assert b["trash"] == len(b"trashed layer")
    assert b["waiting_fuse"] == len(b"purged layer")
    assert b["waiting_grace"] == len(b"uploaded, no manifest yet")
    assert b["untagged"] == len(b"untagged layer")
    assert set(usage.waiting_until) == {"waiting_fuse", "waiting_grace"}


def kit_target(name: str) -> Target:
    repository, _, tag = name.rpartition(":")
    return Target("tag", repository, tag)


def test_usage_totals_match_the_disk(tkit: Kit) -> None:
    kit = tkit
    build_shared_store(kit)
    usage = disk_usage(kit.store)
    files = kit.blob_files()
    assert usage.total == sum(files.values())
    assert usage.blob_count == len(files)
    assert usage.trash_size == len(b"only in trash")
    kit.execute(t.trash.update().values(expires_at=0.0))
    gc.collect(kit.store)
    usage = disk_usage(kit.store)
    assert usage.trash_size == 0
    assert usage.total == sum(kit.blob_files().values())
    assert {m.repository for m in disk_usage(kit.store, with_sharers=False).models} == {
        PREFIX + n for n in ("a", "a-copy", "b", "d")
    }


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["create", "copy", "by-digest", "trash"]),
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["latest", "v1"]),
            st.sets(st.integers(0, 4), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=10,
    )
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unique_sizes_are_the_planners_rule(
    fresh_store: FreshStore, kit_of: Callable[[Store], Kit], steps: list[tuple[str, str, str, set[int]]]
) -> None:
    """For any store, what listings call unique is what the planner's preview of a purge frees."""
    pool = [b"layer %d" % i + b"." * i for i in range(5)]
    with fresh_store(HANGAR_TRASH_RETENTION="1h") as store:
        kit = kit_of(store)
        for op, name, tag, layers in steps:
            if op == "create":
                kit.create(name, [pool[i] for i in sorted(layers)], tag=tag)
            elif op == "by-digest":
                store.put_manifest(PREFIX + name, None, kit.manifest([pool[i] for i in sorted(layers)]))
            elif op == "copy" and kit.models():
                src = sorted(kit.models())[0].rsplit(":", 1)
                store.copy_tag(src[0], src[1], PREFIX + name, tag)
            elif op == "trash":
                kit.delete(name, tag)
        with store.catalog.read() as conn:
            unique = unique_sizes(conn)
        for (repository, tag), size in unique.items():
            [preview] = kit.planner.preview([[Target("tag", repository, tag)]], Actor(), purge=True)
            assert preview.ok and preview.bytes_freed == size, (repository, tag)
