"""Moving a tag onto another manifest removes the old version through the planner, as a delete does."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from modelhangar.core import gc
from modelhangar.core.catalog import schema as t
from modelhangar.core.errors import Conflict, Denied, Refused
from modelhangar.core.planner import Target
from modelhangar.core.retention import RetentionPolicy, prune
from modelhangar.core.store import Actor
from modelhangar.core.trash import list_trash, restore

if TYPE_CHECKING:
    from conftest import Kit, MakeKit

PREFIX = "registry.ollama.ai/library/"


def overwrites(kit: Kit) -> list[tuple[str, str]]:
    return [(r.outcome, r.target) for r in kit.audit() if r.action == "overwrite"]


def test_an_overwrite_puts_the_old_version_in_the_trash_with_what_replaced_it(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h")
    old = kit.create("m", [b"old weights"])
    files = kit.blob_files()
    new = kit.create("m", [b"new weights"])
    assert kit.store.get_tag(PREFIX + "m", "latest").manifest_digest == new  # type: ignore[union-attr]
    [entry] = list_trash(kit.store)
    assert (entry.repository, entry.tag, entry.manifest_digest, entry.replaced_by) == (
        PREFIX + "m",
        "latest",
        old,
        new,
    )
    assert set(files) <= set(kit.blob_files())  # the trash keeps the old version's blobs
    assert overwrites(kit) == [("ok", PREFIX + "m:latest")]
    detail = json.loads(next(r for r in kit.audit() if r.action == "overwrite").detail)
    assert detail["replaced_by"] == new and detail["trash_ids"] == [entry.id]
    with pytest.raises(Conflict):  # the name is taken by what replaced it
        restore(kit.store, entry.id, Actor())
    kit.delete("m", purge=True)
    restore(kit.store, entry.id, Actor())
    assert kit.store.get_tag(PREFIX + "m", "latest").manifest_digest == old  # type: ignore[union-attr]
    assert gc.fsck(kit.store) == []


def test_an_overwrite_with_the_trash_off_frees_the_old_version_at_once(kit: Kit) -> None:
    kit.create("m", [b"old weights"])
    kit.create("m", [b"new weights"])
    assert digest_of(b"old weights") not in kit.blob_files()
    assert list_trash(kit.store) == []
    [row] = [r for r in kit.audit() if r.action == "overwrite"]
    assert (row.outcome, row.bytes_freed) == ("ok", len(b"old weights"))
    assert gc.fsck(kit.store) == []


@pytest.mark.parametrize("pin", ["tag", "manifest"])
def test_a_version_a_dependent_pins_survives_an_overwrite(kit: Kit, pin: str) -> None:
    old = kit.create("served", [b"served weights"])
    kit.depend("deployment", "prod", pin, PREFIX + "served:latest" if pin == "tag" else old, "serves traffic")
    before = kit.snapshot()
    with pytest.raises(Refused, match="deployment prod: serves traffic"):
        kit.create("served", [b"other weights"])
    kit.store.copy_tag(PREFIX + "served", "latest", PREFIX + "served", "latest")  # the same: no overwrite
    kit.create("src", [b"src weights"])
    with pytest.raises(Refused):
        kit.store.copy_tag(PREFIX + "src", "latest", PREFIX + "served", "latest")
    assert kit.store.get_tag(PREFIX + "served", "latest").manifest_digest == old  # type: ignore[union-attr]
    after = kit.snapshot()
    assert after["trash"] == before["trash"] and after["tags"] != before["tags"]  # only src was added
    assert [o for o, _ in overwrites(kit)] == ["refused", "refused"]
    gc.collect(kit.store)  # the refused create's upload
    assert gc.fsck(kit.store) == []


def test_only_the_owner_may_overwrite(kit: Kit) -> None:
    old = kit.create("theirs", [b"alice's weights"], owner="alice")
    bob = Actor(name="bob", face="test", admin=False, principal="bob")
    content = kit.manifest([b"bob's weights"])
    with pytest.raises(Denied, match="bob may not change"):
        kit.store.put_manifest(PREFIX + "theirs", "latest", content, actor=bob)
    assert kit.store.get_tag(PREFIX + "theirs", "latest").manifest_digest == old  # type: ignore[union-attr]
    kit.store.put_manifest(
        PREFIX + "theirs", "latest", content, actor=Actor(name="alice", admin=False, principal="alice")
    )


def test_a_registry_overwrite_keeps_the_old_manifest_untagged_until_retention(kit: Kit) -> None:
    old = kit.create("img", [b"v1 layer"])
    new_content = kit.manifest([b"v2 layer"])
    kit.store.put_manifest(PREFIX + "img", "latest", new_content, keep_untagged=True)
    assert kit.store.manifest_in_repository(PREFIX + "img", old)  # still pullable by digest
    assert list_trash(kit.store) == []
    [row] = kit.rows(t.repo_manifests, t.repo_manifests.c.manifest_digest == old)
    assert row.untagged_at is not None
    # An untagged-retention rule removes it, through the planner.
    assert prune(kit.store, RetentionPolicy(untagged_for=3600), Actor()) == []
    kit.execute(
        t.repo_manifests.update()
        .where(t.repo_manifests.c.manifest_digest == old)
        .values(untagged_at=time.time() - 7200)
    )
    [result] = prune(kit.store, RetentionPolicy(untagged_for=3600), Actor())
    assert result.model == f"img@{old}" and result.status == "deleted"
    assert not kit.store.manifest_in_repository(PREFIX + "img", old)
    assert digest_of(b"v1 layer") not in kit.blob_files()
    assert gc.fsck(kit.store) == []


def test_untagging_keeps_the_manifest(kit: Kit) -> None:
    digest = kit.create("img", [b"layer"])
    plan = kit.planner.delete([Target("untag", PREFIX + "img", "latest")], Actor())
    assert plan.executed and plan.models == [PREFIX + "img:latest"] and plan.untagged == [digest]
    assert plan.manifests == [] and plan.blobs == []
    assert kit.store.get_tag(PREFIX + "img", "latest") is None
    assert kit.store.manifest_in_repository(PREFIX + "img", digest)
    assert kit.planner.delete([Target("manifest", PREFIX + "img", digest)], Actor()).executed
    assert kit.blob_files() == {}


def test_tagging_again_clears_untagged(kit: Kit) -> None:
    digest = kit.create("img", [b"layer"])
    kit.planner.delete([Target("untag", PREFIX + "img", "latest")], Actor())
    content = kit.store.get_manifest(digest)
    assert content is not None
    kit.store.put_manifest(PREFIX + "img", "v2", content[0])
    [row] = kit.rows(t.repo_manifests, t.repo_manifests.c.manifest_digest == digest)
    assert row.untagged_at is None


def digest_of(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()
