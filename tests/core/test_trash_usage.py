"""The trash (restore as it was, or refuse) and disk usage (what deleting a model would free)."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

import pytest

from modelhangar.core import gc
from modelhangar.core.catalog import schema as t
from modelhangar.core.errors import Conflict, NotFound
from modelhangar.core.planner import Target
from modelhangar.core.store import Actor
from modelhangar.core.trash import find_entry, list_trash, restore
from modelhangar.core.usage import disk_usage

if TYPE_CHECKING:
    from conftest import Kit, MakeKit

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
    shared_with = by_name[PREFIX + "a:latest"].shared_with  # everyone shares the config blob
    assert shared_with == sorted(["(trash)", *(PREFIX + n + ":latest" for n in ("a-copy", "b", "d"))])
    assert by_name[PREFIX + "b:latest"].unique_size == len(b"b alone")
    assert by_name[PREFIX + "d:latest"].unique_size == len(b"d alone, big" * 100)
    # And a real delete frees exactly that, on disk.
    files = kit.blob_files()
    plan = kit.delete("b", purge=True)
    assert plan.bytes_freed == by_name[PREFIX + "b:latest"].unique_size
    assert sum(files.values()) - sum(kit.blob_files().values()) == plan.bytes_freed


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
