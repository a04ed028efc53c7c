"""Garbage collection and fsck: what GC reclaims, what it must leave, and what fsck reports."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from harness import AUTH_VARIANTS, Auth, StartServer, audit_rows, hangar_env
from modelhangar.core import gc, reclaim
from modelhangar.core.catalog import schema as t
from modelhangar.core.partials import locked

if TYPE_CHECKING:
    from conftest import Kit, MakeKit

HOUR = 3600.0
CONFIG = b'{"model_format":"gguf","model_family":"test"}'


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def age(path: Path, seconds: float = 2 * HOUR) -> None:
    """Pretend a file was last written `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def kinds(kit: Kit, *, verify: bool = False) -> list[tuple[str, str]]:
    return sorted((p.kind, p.subject) for p in gc.fsck(kit.store, verify=verify))


def test_unreferenced_blob_is_reclaimed(kit: Kit) -> None:
    kit.create("keep", [b"kept"])
    d = kit.blob(b"uploaded, never used")
    assert kinds(kit) == [("blob-unreferenced", d)]
    preview = gc.collect(kit.store, dry_run=True)
    assert preview.blobs == [d] and preview.bytes_freed == len(b"uploaded, never used")
    assert d in kit.blob_files()
    report = gc.collect(kit.store)
    assert report.blobs == [d] and report.bytes_freed == len(b"uploaded, never used")
    assert report.finished == [d]
    assert d not in kit.blob_files()
    assert kit.rows(t.blobs, t.blobs.c.digest == d) == []
    assert kit.store.blob_size(digest_of(b"kept")) == 4
    assert kinds(kit, verify=True) == []
    assert gc.collect(kit.store).blobs == []


def test_file_without_catalog_row_is_reclaimed(kit: Kit) -> None:
    data = b"left behind by a crash between rename and commit"
    path = kit.store.settings.blobs_dir / ("sha256-" + hashlib.sha256(data).hexdigest())
    path.write_bytes(data)
    age(path)
    assert kinds(kit) == [("file-unknown", digest_of(data))]
    report = gc.collect(kit.store)
    assert report.orphan_files == [digest_of(data)]
    assert not path.exists()
    assert kit.rows(t.blobs) == []
    assert kinds(kit) == []


def test_interrupted_deletion_is_finished(kit: Kit) -> None:
    kit.create("keep", [b"kept"])
    d = kit.blob(b"half deleted")
    # A deleter marked the row and crashed before unlinking the file.
    kit.execute(t.blobs.update().where(t.blobs.c.digest == d).values(state="deleting"))
    assert kit.store.blob_size(d) is None  # a blob being deleted looks absent
    assert kinds(kit) == [("blob-deleting", d)]
    report = gc.collect(kit.store)
    assert report.finished == [d]
    assert d not in kit.blob_files()
    assert kit.rows(t.blobs, t.blobs.c.digest == d) == []
    assert kinds(kit) == []


def test_deleting_row_without_a_file_is_dropped(kit: Kit) -> None:
    d = kit.blob(b"already unlinked")
    kit.execute(t.blobs.update().where(t.blobs.c.digest == d).values(state="deleting"))
    kit.blob_path(d).unlink()  # crashed after the unlink, before dropping the row
    assert gc.collect(kit.store).finished == [d]
    assert kit.rows(t.blobs) == []
    assert kinds(kit) == []


def test_stray_files_and_dead_temp_dirs_are_reclaimed(kit: Kit) -> None:
    blobs = kit.store.settings.blobs_dir
    kit.create("keep", [b"kept"])
    strays = ["partial-upload.tmp", "sha256-" + "A" * 64, "sha256-short"]
    for name in strays:
        (blobs / name).write_bytes(b"junk")
        age(blobs / name)
    dead = kit.store.settings.tmp_dir / "0123456789abcdef"  # a temp dir whose process is gone
    dead.mkdir()
    (dead / "upload-x").write_bytes(b"half an upload")
    report = gc.collect(kit.store)
    assert sorted(report.strays) == sorted([*strays, "tmp/0123456789abcdef"])
    assert sorted(p.name for p in blobs.iterdir()) == sorted(d.replace(":", "-") for d in kit.blob_files())
    assert not dead.exists()
    assert kit.store.blobs.tmp_dir.is_dir()  # our own temp dir stays
    assert kinds(kit) == []


def test_gc_respects_the_grace_period(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_GC_GRACE="1h")
    d = kit.blob(b"uploaded a moment ago, its manifest is on the way")
    orphan = kit.store.settings.blobs_dir / ("sha256-" + hashlib.sha256(b"fresh orphan").hexdigest())
    orphan.write_bytes(b"fresh orphan")
    stray = kit.store.settings.blobs_dir / "fresh.partial"
    stray.write_bytes(b"x")
    report = gc.collect(kit.store)
    assert (report.blobs, report.orphan_files, report.strays) == ([], [], [])
    assert d in kit.blob_files() and orphan.exists() and stray.exists()
    assert kinds(kit) == []  # within the grace period nothing is a problem yet
    # An hour later it is all garbage.
    kit.execute(t.blobs.update().values(touched_at=time.time() - 2 * HOUR))
    age(orphan)
    age(stray)
    assert {p.kind for p in gc.fsck(kit.store)} == {"blob-unreferenced", "file-unknown"}
    report = gc.collect(kit.store)
    assert report.blobs == [d]
    assert report.orphan_files == [digest_of(b"fresh orphan")]
    assert report.strays == ["fresh.partial"]
    assert kit.blob_files() == {}
    assert kinds(kit) == []


def test_a_delete_leaves_just_used_blobs_to_the_reclaim_timer(make_kit: MakeKit) -> None:
    """Blobs a writer touched within the reuse fuse go when their fuse ends, not after the orphan grace."""
    kit = make_kit(HANGAR_GC_GRACE="1h", HANGAR_REUSE_FUSE="30s")
    kit.create("m", [b"fresh layer"])
    fresh = sorted([digest_of(b"fresh layer"), digest_of(CONFIG)])
    preview = kit.delete("m", purge=True, dry_run=True)
    plan = kit.delete("m", purge=True)
    assert plan.executed and sorted(plan.deferred) == fresh
    assert (plan.bytes_now, plan.blobs) == (0, plan.deferred)
    assert plan.bytes_freed == len(b"fresh layer") + len(CONFIG) == preview.bytes_freed
    [later] = plan.later
    assert later["reason"] == "just used by an upload" and later["bytes"] == plan.bytes_freed
    assert time.time() < later["at"] <= time.time() + kit.store.reuse_fuse
    assert digest_of(b"fresh layer") in kit.blob_files()
    assert kinds(kit) == []
    assert reclaim.run_due(kit.store).blobs == []  # not due yet
    assert reclaim.next_due(kit.store) == pytest.approx(later["at"])
    gone = reclaim.run_due(kit.store, at=later["at"] + 0.01)
    assert sorted(gone.blobs) == fresh and gone.bytes == plan.bytes_freed
    assert kit.blob_files() == {} and reclaim.next_due(kit.store) is None
    assert kinds(kit) == []
    [row] = [r for r in kit.audit() if r.action == "reclaim"]
    assert row.bytes_freed == plan.bytes_freed


def test_gc_reclaims_once_referenced_blobs_past_their_fuse_not_the_grace(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_GC_GRACE="1h", HANGAR_REUSE_FUSE="30s")
    kit.create("m", [b"layer"])
    plan = kit.delete("m", purge=True)
    assert plan.deferred
    report = gc.collect(kit.store)
    assert report.blobs == [] and report.waiting[0]["bytes"] == plan.bytes_freed
    kit.execute(t.blobs.update().values(touched_at=time.time() - kit.store.reuse_fuse - 1))
    kit.execute(t.reclaims.delete())  # as if no timer ever ran: GC alone reclaims past the fuse
    report = gc.collect(kit.store)
    assert sorted(report.blobs) == sorted(plan.deferred) and report.waiting == []
    assert kit.blob_files() == {}


def test_a_blob_touched_again_before_its_reclaim_is_deferred_again(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_REUSE_FUSE="30s")
    kit.create("m", [b"layer"])
    plan = kit.delete("m", purge=True)
    layer = digest_of(b"layer")
    due = plan.later[0]["at"]
    kit.execute(t.blobs.update().where(t.blobs.c.digest == layer).values(touched_at=due + 5))
    gone = reclaim.run_due(kit.store, at=due + 1)
    assert gone.blobs == [digest_of(CONFIG)] and gone.deferred == [layer]
    fuse = kit.store.reuse_fuse
    assert reclaim.next_due(kit.store) == pytest.approx(due + 5 + fuse)
    kit.create("again", [b"layer"])  # named by a manifest again: it stays, and leaves the timer
    assert reclaim.run_due(kit.store, at=due + 6 + fuse).blobs == []
    assert layer in kit.blob_files() and reclaim.next_due(kit.store) is None


def test_fsck_reports_damaged_blobs(kit: Kit) -> None:
    kit.create("m", [b"will vanish", b"will grow", b"will rot!"])
    kit.blob_path(digest_of(b"will vanish")).unlink()
    with open(kit.blob_path(digest_of(b"will grow")), "ab") as f:
        f.write(b" and grow")
    kit.blob_path(digest_of(b"will rot!")).write_bytes(b"has  rot!")  # same size, other bytes
    assert kinds(kit) == sorted(
        [("blob-file-missing", digest_of(b"will vanish")), ("blob-size", digest_of(b"will grow"))]
    )
    assert kinds(kit, verify=True) == sorted(
        [
            ("blob-file-missing", digest_of(b"will vanish")),
            ("blob-size", digest_of(b"will grow")),
            ("blob-digest", digest_of(b"will grow")),
            ("blob-digest", digest_of(b"will rot!")),
        ]
    )


def test_fsck_reports_dangling_references(kit: Kit) -> None:
    kit.create("m", [b"w"])
    kit.execute(t.blobs.update().where(t.blobs.c.digest == digest_of(b"w")).values(state="deleting"))
    problems = kinds(kit)
    assert ("blob-missing", digest_of(b"w")) in problems
    assert ("blob-deleting", digest_of(b"w")) in problems
    kit.execute(t.blobs.update().values(state="present"))
    assert kinds(kit) == []


def test_fsck_is_clean_after_gc(kit: Kit) -> None:
    kit.create("a", [b"shared", b"a"])
    kit.create("b", [b"shared", b"b"])
    kit.blob(b"abandoned upload")
    kit.execute(t.blobs.update().where(t.blobs.c.digest == digest_of(b"a")).values(state="deleting"))
    orphan = kit.store.settings.blobs_dir / ("sha256-" + hashlib.sha256(b"orphan").hexdigest())
    orphan.write_bytes(b"orphan")
    age(orphan)
    (kit.store.settings.blobs_dir / "junk").write_bytes(b"")
    age(kit.store.settings.blobs_dir / "junk")
    assert gc.fsck(kit.store) != []
    kit.delete("a")  # releases a's manifest; its own blob's row is already 'deleting'
    gc.collect(kit.store)
    assert kinds(kit, verify=True) == []
    assert set(kit.blob_files()) == {
        digest_of(b"shared"),
        digest_of(b"b"),
        digest_of(CONFIG),
    }


def test_dry_run_changes_nothing_and_matches_the_real_collection(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h")
    kit.create("keep", [b"shared", b"keep"])
    kit.create("trashed", [b"shared", b"trashed"])
    kit.delete("trashed")
    kit.execute(t.trash.update().values(expires_at=0.0))
    kit.blob(b"abandoned")
    orphan = kit.store.settings.blobs_dir / ("sha256-" + hashlib.sha256(b"orphan").hexdigest())
    orphan.write_bytes(b"orphan")
    age(orphan)
    before = kit.snapshot()
    preview = gc.collect(kit.store, dry_run=True)
    assert kit.snapshot() == before
    assert preview.dry_run
    real = gc.collect(kit.store)
    assert (sorted(preview.blobs), preview.bytes_freed, preview.expired_trash) == (
        sorted(real.blobs),
        real.bytes_freed,
        real.expired_trash,
    )
    assert sorted(real.blobs) == sorted([digest_of(b"trashed"), digest_of(b"abandoned")])
    assert real.orphan_files == [digest_of(b"orphan")]
    assert kinds(kit, verify=True) == []


def test_a_scan_tolerates_blobs_unlinked_under_it(kit: Kit) -> None:
    digests = {kit.blob(b"one"), kit.blob(b"two"), kit.blob(b"three")}
    scan = kit.store.blobs.iter_blobs()
    first, _ = next(scan)  # the directory is listed; the scan is on its way through it
    for d in digests - {first}:
        kit.blob_path(d).unlink()  # another process's delete, second phase
    assert list(scan) == []


def test_a_dry_run_counts_blobs_only_expiring_entries_share(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_TRASH_RETENTION="1h", HANGAR_GC_GRACE="0", HANGAR_REUSE_FUSE="0")
    kit.create("keep", [b"keep"])
    kit.create("one", [b"pair", b"one"])
    kit.create("two", [b"pair", b"two"])
    kit.delete("one")
    kit.delete("two")
    kit.execute(t.trash.update().values(expires_at=0.0))
    preview = gc.collect(kit.store, dry_run=True)
    real = gc.collect(kit.store)
    assert digest_of(b"pair") in real.blobs
    assert (sorted(preview.blobs), preview.bytes_freed) == (sorted(real.blobs), real.bytes_freed)
    assert [(a.action, a.dry_run) for a in kit.audit() if a.action == "gc"] == [("gc", True), ("gc", False)]


def test_gc_removes_abandoned_transfers_but_not_busy_or_recent_ones(make_kit: MakeKit) -> None:
    kit = make_kit(HANGAR_UPLOAD_EXPIRY="1h")
    root = kit.store.settings.home / "partials"
    root.mkdir(parents=True)
    old_pull = root / ("sha256-" + "a" * 64 + ".partial")
    old_push = root / ("push-" + "b" * 40 + ".json")
    busy_push = root / ("push-" + "c" * 40 + ".json")
    recent_pull = root / ("sha256-" + "d" * 64 + ".partial")
    for path in (old_pull, old_push, busy_push, recent_pull):
        path.write_bytes(b"{}")
    for path in (old_pull, old_push, busy_push):
        age(path)
    with locked(busy_push):  # a push still working on it, in this or another process
        report = gc.collect(kit.store)
    assert sorted(report.strays) == sorted([f"partials/{old_pull.name}", f"partials/{old_push.name}"])
    assert sorted(p.name for p in root.iterdir()) == sorted([busy_push.name, recent_pull.name])


HOLD_GC_LOCK = """
import sys, time
from modelhangar.core.config import load_settings
from modelhangar.core.store import Store
store = Store(load_settings())
with store.catalog.exclusive("gc", blocking=True):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_collector_at_a_time_taken_over_when_its_holder_dies(make_kit: MakeKit, tmp_path: Path) -> None:
    kit = make_kit()
    kit.blob(b"an orphan upload")
    env = {**os.environ, "HANGAR_HOME": str(kit.store.settings.home)}
    if not kit.store.catalog.is_sqlite:
        env["HANGAR_DATABASE_URL"] = kit.store.settings.database_url
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_GC_LOCK], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        report = gc.collect(kit.store, blocking=False)  # the server's schedule: skip the round
        assert report.skipped and report.blobs == [] and kit.blob_files() != {}
    finally:
        holder.kill()  # a collector that dies lets go of the lock
        holder.wait()
    # On PostgreSQL the lock goes when the server notices its client's connection closed, a moment
    # after the process is gone: until then a round is still skipped.
    deadline = time.monotonic() + 60
    while (report := gc.collect(kit.store, blocking=False)).skipped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not report.skipped and report.blobs == [digest_of(b"an orphan upload")]


@pytest.mark.parametrize("auth", AUTH_VARIANTS)
def test_a_gc_request_waits_for_a_dying_collector_then_collects(
    home: Path, start_server: StartServer, auth: str
) -> None:
    """`POST /api/hangar/gc` while another process holds the collector lock waits for it, and
    collects once its holder dies. In the `tokens` run only an admin's token may ask (a user's is
    refused at once, without waiting for the lock), and the round is audited as that admin."""
    who = Auth(auth, home)
    srv = start_server(home, env=who.env)
    orphan = b"uploaded, never named by a manifest"
    r = httpx.post(f"{srv.url}/api/blobs/{digest_of(orphan)}", content=orphan, headers=who.user)
    assert r.status_code == 201, r.text
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_GC_LOCK], env=hangar_env(home), stdout=subprocess.PIPE, text=True
    )
    answers: list[httpx.Response] = []
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        if who.on:
            refused = httpx.post(f"{srv.url}/api/hangar/gc", json={}, headers=who.user, timeout=60)
            assert refused.status_code == 403, refused.text
        asking = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{srv.url}/api/hangar/gc", json={}, headers=who.admin, timeout=120)
            )
        )
        asking.start()
        # The request waits on the lock (not a timing assertion: it must not answer before the kill).
        asking.join(1.0)
        assert answers == []
    finally:
        holder.kill()  # a collector that dies lets go of the lock
        holder.wait()
    asking.join(120)
    [done] = answers
    assert done.status_code == 200, done.text
    report = done.json()
    assert not report.get("skipped") and digest_of(orphan) in report["blobs"]
    if who.on:
        [entry] = [e for e in audit_rows(home) if e["action"] == "gc" and not e["dry_run"]]
        assert entry["actor"] == "root"
    who.assert_secret(logs=[srv.log()], home=home)
