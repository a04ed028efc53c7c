"""The deletion planner: previews that match, shared layers, blockers, trash, audit, and cost."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event

from modelhangar.core import gc
from modelhangar.core.catalog import schema as t
from modelhangar.core.planner import Blocker, Plan, Target
from modelhangar.core.store import Actor, Store
from modelhangar.core.trash import list_trash, restore

if TYPE_CHECKING:
    from conftest import Kit, MakeKit

PREFIX = "registry.ollama.ai/library/"
CONFIG = b'{"model_format":"gguf","model_family":"test"}'
SAME = ("models", "tags", "manifests", "blobs", "bytes_freed", "reclaimed", "kept", "not_found", "deferred")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def same_parts(plan: Plan) -> dict[str, Any]:
    d = plan.to_dict()
    return {k: d[k] for k in SAME}


def three_models(kit: Kit) -> None:
    """a and b share a layer (and the config); c shares only the config."""
    kit.create("a", [b"shared layer", b"a's own layer"])
    kit.create("b", [b"shared layer", b"b's own layer"])
    kit.create("c", [b"c's own layer"])


@pytest.fixture(params=["purge", "trash"])
def mode_kit(request: pytest.FixtureRequest, make_kit: MakeKit) -> Kit:
    return make_kit(HANGAR_TRASH_RETENTION="1h" if request.param == "trash" else "0")


def test_dry_run_changes_nothing_and_matches_the_real_delete(mode_kit: Kit) -> None:
    kit = mode_kit
    three_models(kit)
    before = kit.snapshot()
    preview = kit.delete("a", dry_run=True)
    assert kit.snapshot() == before
    assert preview.dry_run and not preview.executed and preview.ok
    real = kit.delete("a")
    assert real.executed and not real.dry_run
    assert same_parts(preview) == same_parts(real)
    assert real.models == [PREFIX + "a:latest"]
    assert real.bytes_freed == len(b"a's own layer")
    assert real.blobs == [digest_of(b"a's own layer")]
    if real.trash:
        assert real.reclaimed == "on trash expiry"
        assert len(real.trash_ids) == 1
    else:
        assert real.reclaimed == "now"
        assert real.trash_ids == []


def test_shared_layers_survive_and_unshared_ones_are_freed(kit: Kit) -> None:
    three_models(kit)
    plan = kit.delete("a")
    assert plan.ok and plan.executed and not plan.trash
    assert plan.blobs == [digest_of(b"a's own layer")]
    assert plan.bytes_freed == len(b"a's own layer")
    assert len(plan.manifests) == 1
    kept = {k["digest"]: k for k in plan.kept}
    assert set(kept) == {digest_of(b"shared layer"), digest_of(CONFIG)}
    assert kept[digest_of(b"shared layer")] == {
        "digest": digest_of(b"shared layer"),
        "size": len(b"shared layer"),
        "used_by": PREFIX + "b:latest",
    }
    assert kept[digest_of(CONFIG)]["used_by"] in (PREFIX + "b:latest", PREFIX + "c:latest")
    files = kit.blob_files()
    assert digest_of(b"a's own layer") not in files
    assert digest_of(b"shared layer") in files
    assert kit.models() == {PREFIX + "b:latest", PREFIX + "c:latest"}

    plan_b = kit.delete("b")
    assert set(plan_b.blobs) == {digest_of(b"shared layer"), digest_of(b"b's own layer")}
    assert plan_b.bytes_freed == len(b"shared layer") + len(b"b's own layer")
    assert plan_b.kept == [{"digest": digest_of(CONFIG), "size": len(CONFIG), "used_by": PREFIX + "c:latest"}]
    plan_c = kit.delete("c")
    assert plan_c.kept == []
    assert set(plan_c.blobs) == {digest_of(CONFIG), digest_of(b"c's own layer")}
    assert kit.blob_files() == {}
    assert kit.store.list_repositories() == []
    assert gc.fsck(kit.store) == []


def test_deleting_a_missing_model_is_not_found_and_changes_nothing(kit: Kit) -> None:
    kit.create("a", [b"w"])
    before = kit.snapshot()
    plan = kit.delete("nope")
    assert plan.not_found == [PREFIX + "nope:latest"]
    assert not plan.ok and not plan.executed
    plan = kit.delete("a", "other-tag")
    assert plan.not_found == [PREFIX + "a:other-tag"]
    # Several targets are one unit: one missing target means none is deleted.
    both = kit.planner.delete(
        [Target("tag", PREFIX + "a", "latest"), Target("tag", PREFIX + "zzz", "latest")], Actor()
    )
    assert both.not_found == [PREFIX + "zzz:latest"] and not both.executed
    assert kit.snapshot() == before
    assert [(r.action, r.outcome, r.bytes_freed) for r in kit.audit()] == [("delete", "not_found", 0)] * 3


@pytest.mark.parametrize("target_kind", ["repository", "tag", "manifest"])
def test_dependents_block_the_delete_and_change_nothing(kit: Kit, target_kind: str) -> None:
    digest = kit.create("served", [b"w"])
    kit.create("other", [b"o"])
    target = {"repository": PREFIX + "served", "tag": PREFIX + "served:latest", "manifest": digest}[
        target_kind
    ]
    kit.depend("deployment", "prod-chat", target_kind, target, "serves traffic")
    kit.depend("agent", "helper", "tag", PREFIX + "other:latest")
    before = kit.snapshot()
    for dry_run in (False, True):
        plan = kit.delete("served", dry_run=dry_run)
        assert plan.blockers == [Blocker("deployment", "prod-chat", "serves traffic")]
        assert not plan.ok and not plan.executed
    assert kit.snapshot() == before
    kit.execute(t.dependents.delete().where(t.dependents.c.id == "prod-chat"))
    assert kit.delete("served").executed
    assert [r.outcome for r in kit.audit()] == ["refused", "refused", "ok"]


def test_permission_blocks_a_non_owner(kit: Kit) -> None:
    kit.create("private", [b"w"], owner="alice")
    before = kit.snapshot()
    plan = kit.delete("private", actor=Actor(name="bob", face="api", admin=False, principal="bob"))
    assert [(b.kind, b.id) for b in plan.blockers] == [("permission", PREFIX + "private")]
    assert not plan.executed
    assert kit.snapshot() == before
    [row] = kit.audit()
    assert (row.actor, row.face, row.outcome) == ("bob", "api", "refused")
    assert kit.delete("private", actor=Actor(name="alice", admin=False, principal="alice")).executed


def test_an_admin_may_delete_what_others_own(kit: Kit) -> None:
    kit.create("private", [b"w"], owner="alice")
    assert kit.delete("private", actor=Actor(name="root", admin=True)).executed


def test_trash_keeps_blobs_until_the_entry_expires(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h")
    three_models(kit)
    files = kit.blob_files()
    plan = kit.delete("a")
    assert plan.executed and plan.trash and plan.reclaimed == "on trash expiry"
    assert kit.models() == {PREFIX + "b:latest", PREFIX + "c:latest"}
    assert kit.blob_files() == files
    [entry] = list_trash(kit.store)
    assert (entry.id, entry.repository, entry.tag) == (plan.trash_ids[0], PREFIX + "a", "latest")
    assert entry.expires_at == pytest.approx(entry.deleted_at + 3600)
    assert gc.collect(kit.store).expired_trash == []  # not expired yet: everything stays
    assert kit.blob_files() == files
    assert gc.fsck(kit.store) == []
    kit.execute(t.trash.update().values(expires_at=time.time() - 1))
    report = gc.collect(kit.store)
    assert report.expired_trash == [PREFIX + "a:latest"]
    assert report.bytes_freed == plan.bytes_freed == len(b"a's own layer")
    assert report.blobs == plan.blobs
    gone = set(files) - set(kit.blob_files())
    assert gone == set(plan.blobs)
    assert list_trash(kit.store) == []
    assert gc.fsck(kit.store) == []


def test_trash_bytes_freed_counts_only_what_expiry_frees(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h")
    three_models(kit)
    first = kit.delete("a")
    second = kit.delete("b")  # the shared layer is still held by a's trash entry, then b's
    assert second.bytes_freed == len(b"b's own layer")
    kit.execute(t.trash.update().where(t.trash.c.id == first.trash_ids[0]).values(expires_at=0.0))
    assert gc.collect(kit.store).bytes_freed == first.bytes_freed
    # Now b's entry alone holds the shared layer: its expiry frees more than its plan said then.
    assert kit.delete("c", dry_run=True).bytes_freed == len(b"c's own layer")
    kit.execute(t.trash.update().values(expires_at=0.0))
    report = gc.collect(kit.store)
    assert report.bytes_freed == len(b"b's own layer") + len(b"shared layer")
    assert gc.fsck(kit.store) == []


def test_purge_bypasses_the_trash(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h")
    three_models(kit)
    plan = kit.delete("a", purge=True)
    assert plan.executed and not plan.trash and plan.reclaimed == "now"
    assert digest_of(b"a's own layer") not in kit.blob_files()
    assert list_trash(kit.store) == []


def test_audit_log_records_every_outcome(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h")
    three_models(kit)
    kit.create("owned", [b"o"], owner="alice")
    bob = Actor(name="bob", face="api", admin=False, principal="bob")
    kit.delete("a", dry_run=True)
    kit.delete("a", purge=True)
    kit.delete("owned", actor=bob)
    trashed = kit.delete("b")
    restore(kit.store, trashed.trash_ids[0], Actor(name="carol", face="cli"))
    kit.delete("c")
    kit.execute(t.trash.update().values(expires_at=0.0))
    gc.collect(kit.store)
    rows = [(r.action, r.actor, r.dry_run, r.outcome, r.bytes_freed) for r in kit.audit()]
    assert rows == [
        ("delete", "local", True, "ok", 0),
        ("delete", "local", False, "ok", len(b"a's own layer")),
        ("delete", "bob", False, "refused", 0),
        ("delete", "local", False, "ok", 0),
        ("restore", "carol", False, "ok", 0),
        ("delete", "local", False, "ok", 0),
        ("expire", "gc", False, "ok", len(b"c's own layer")),
        ("gc", "gc", False, "ok", len(b"c's own layer")),
    ]
    detail = json.loads(kit.audit()[1].detail)
    assert detail["blobs"] == [digest_of(b"a's own layer")]
    assert detail["models"] == [PREFIX + "a:latest"]
    assert kit.audit()[0].target == PREFIX + "a:latest"


def test_deleting_a_whole_repository(kit: Kit) -> None:
    kit.create("multi", [b"v1"], tag="v1")
    kit.create("multi", [b"v2"], tag="v2")
    kit.create("other", [b"v2"])
    plan = kit.planner.delete([Target("repository", PREFIX + "multi")], Actor())
    assert plan.executed
    assert sorted(plan.models) == [PREFIX + "multi:v1", PREFIX + "multi:v2"]
    assert plan.blobs == [digest_of(b"v1")]
    assert kit.models() == {PREFIX + "other:latest"}
    assert kit.store.list_repositories() == [PREFIX + "other"]
    assert gc.fsck(kit.store) == []


def count_statements(store: Store, action: Callable[[], Any]) -> int:
    """SQL statements the store's engines execute while `action` runs."""
    count = 0

    def on_execute(*_: Any) -> None:
        nonlocal count
        count += 1

    engines = {id(e): e for e in (store.catalog.engine, store.catalog.read_engine)}.values()
    for e in engines:
        event.listen(e, "before_cursor_execute", on_execute)
    try:
        action()
    finally:
        for e in engines:
            event.remove(e, "before_cursor_execute", on_execute)
    return count


def test_delete_cost_does_not_grow_with_the_store(make_kit: MakeKit, fast_home: Path) -> None:
    """Invariant 4: a delete executes the same statements in a store of 10 models as in one of 300."""
    kit = make_kit(fast_home, HANGAR_TRASH_RETENTION="1h")
    common = kit.manifest([b"common layer"])  # uploads the config and the common layer once

    def grow(start: int, stop: int) -> None:
        for i in range(start, stop):  # every model: the config, the common layer and one of its own
            own = b"own layer %d" % i
            content = common.replace(
                b"]}", b',{"digest":"%s","size":%d}]}' % (kit.blob(own).encode(), len(own))
            )
            kit.store.put_manifest(PREFIX + f"m{i:03d}", "latest", content)

    def measured_delete(name: str, purge: bool) -> tuple[int, Plan]:
        plans: list[Plan] = []
        n = count_statements(kit.store, lambda: plans.append(kit.delete(name, purge=purge)))
        assert plans[0].executed
        assert (len(plans[0].blobs), len(plans[0].kept)) == (1, 2)
        return n, plans[0]

    grow(0, 10)
    small_purge, _ = measured_delete("m000", purge=True)
    small_trash, _ = measured_delete("m001", purge=False)
    grow(10, 302)  # 300 models now, and a trash entry
    big_purge, _ = measured_delete("m002", purge=True)
    big_trash, _ = measured_delete("m003", purge=False)
    assert (small_purge, small_trash) == (big_purge, big_trash)
    assert max(small_purge, small_trash) < 80
    assert len(kit.store.list_tags()) == 298
    assert len(list_trash(kit.store)) == 2


def test_a_dependent_blocks_whatever_the_spelling_of_the_name(kit: Kit) -> None:
    kit.create("MixedCase", [b"w"], tag="Latest")
    kit.depend("deployment", "prod", "tag", PREFIX + "mixedcase:latest", "serves traffic")
    plan = kit.delete("mixedcase", "latest")
    assert [b.id for b in plan.blockers] == ["prod"]
    assert not plan.executed


@pytest.mark.parametrize("retention", ["0", "1h"])
def test_a_preview_of_several_deletes_counts_what_they_free_together(
    make_kit: MakeKit, retention: str
) -> None:
    """Blobs only the selected models share are freed by the last of them, in the preview as for real."""
    kit = make_kit(HANGAR_TRASH_RETENTION=retention, HANGAR_GC_GRACE="0", HANGAR_REUSE_FUSE="0")
    kit.create("keep", [b"keep", b"kept-shared"])
    kit.create("one", [b"pair", b"one", b"kept-shared"])
    kit.create("two", [b"pair", b"two"])
    kit.execute(t.blobs.update().values(touched_at=0.0))
    groups = [[Target("tag", f"registry.ollama.ai/library/{n}", "latest")] for n in ("one", "missing", "two")]
    before = kit.snapshot()
    plans = kit.planner.preview(groups, Actor(), purge=False)
    assert kit.snapshot() == before
    assert [p.ok for p in plans] == [True, False, True]
    assert digest_of(b"pair") not in plans[0].blobs and digest_of(b"pair") in plans[2].blobs
    assert {digest_of(b"kept-shared"), digest_of(b"pair")} <= {k["digest"] for k in plans[0].kept}
    real = [kit.delete(n, purge=True) for n in ("one", "two")]
    assert [p.bytes_freed for p in real] == [plans[0].bytes_freed, plans[2].bytes_freed]
    assert [sorted(p.blobs) for p in real] == [sorted(plans[0].blobs), sorted(plans[2].blobs)]


def test_a_refused_group_does_not_count_towards_later_ones(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="0", HANGAR_GC_GRACE="0", HANGAR_REUSE_FUSE="0")
    kit.create("theirs", [b"pair", b"a"], owner="alice")
    kit.create("mine", [b"pair", b"b"])
    kit.execute(t.blobs.update().values(touched_at=0.0))
    groups = [[Target("tag", f"registry.ollama.ai/library/{n}", "latest")] for n in ("theirs", "mine")]
    refused, allowed = kit.planner.preview(
        groups, Actor(name="bob", face="test", admin=False, principal="bob")
    )
    assert [b.kind for b in refused.blockers] == ["permission"]
    assert refused.blobs == [digest_of(b"a")]  # what it would remove, were it allowed
    assert digest_of(b"b") in allowed.blobs
    assert digest_of(b"pair") not in allowed.blobs  # still held: the refused delete does not happen


def test_a_dependent_s_policy_blocks_warns_or_follows_a_shared_setting(kit: Kit) -> None:
    from modelhangar.core import dependents, shared_settings

    kit.create("m", [b"w"])
    with kit.store.catalog.write() as conn:
        dependents.record(
            conn, "pipeline", "p1", "tag", PREFIX + "m:latest", reason="embeds", policy="setting:safe"
        )
        dependents.record(conn, "agent", "a1", "tag", PREFIX + "m:latest", reason="chats", policy="warn")
    plan = kit.delete("m", dry_run=True)
    assert plan.ok and [w.id for w in plan.warnings] == ["a1", "p1"]
    shared_settings.put(kit.store, "safe", True)
    plan = kit.delete("m", dry_run=True)
    assert [b.id for b in plan.blockers] == ["p1"] and [w.id for w in plan.warnings] == ["a1"]
    shared_settings.put(kit.store, "safe", False)
    assert kit.delete("m").executed


def test_rules_of_a_repository_kind_block_deletions(kit: Kit) -> None:
    from modelhangar.core import model_rules

    kit.create("ruled", [b"w"])
    kit.execute(t.repositories.update().values(kind="test-kind"))

    @model_rules.rule("test-kind")
    def never_the_whole(conn: Any, removal: model_rules.Removal) -> list[tuple[str, str, str]]:
        return [("state", removal.repository.name, "keep it")] if removal.whole else []

    try:
        plan = kit.planner.delete([Target("repository", PREFIX + "ruled")], Actor(), dry_run=True)
        assert [b.reason for b in plan.blockers] == ["keep it"]
        assert kit.delete("ruled", dry_run=True).ok  # a version (tag) may go
    finally:
        model_rules.RULES.pop("test-kind")
