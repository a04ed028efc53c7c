"""Online garbage collection and the consistency check, both safe beside running servers.

GC never needs a read-only window: it expires trash entries through the planner, then retires
unreferenced blobs with the same row-lock protocol every delete uses (see `core/store.py`),
finishes deletions a crash interrupted, and reclaims files the catalog does not know. A file
without a row gets a `deleting` row first (insert-if-absent, so an uploader that is installing
that very digest wins the race), then goes through the ordinary second phase.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from modelhangar.core import partials, reclaim, uploads
from modelhangar.core.blobstore import sha256_file
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.digests import sha256_digest
from modelhangar.core.errors import HangarError
from modelhangar.core.manifests import parse_manifest
from modelhangar.core.planner import Plan, Planner, Target
from modelhangar.core.store import DELETING, PRESENT, Actor, Released, Store, now


@dataclass
class GCReport:
    """What a GC round reclaimed (or, dry, would), and what it left waiting and until when."""

    dry_run: bool
    expired_trash: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    finished: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    """Unreferenced blobs left for now: `{"bytes", "blobs", "until", "reason"}` per reason."""
    skipped: bool = False
    """True when another collector held the store's GC lock (a scheduled round then does nothing)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Problem:
    kind: str
    subject: str
    detail: str


COLLECTOR_LOCK = "gc"
WAIT_FUSE = "used by a writer within the reuse fuse"
WAIT_GRACE = "uploaded but never named by a manifest (the orphan grace)"


def collect(
    store: Store, *, dry_run: bool = False, actor: Actor | None = None, blocking: bool = True
) -> GCReport:
    """Reclaim everything nothing references (or, with dry_run, say what that would be).

    One collector works on a store at a time (README): the GC lock is a PostgreSQL advisory lock or an
    flock, released if its holder dies. `blocking=False` (the server's schedule) skips the round when
    another process collects.
    """
    actor = actor or Actor(name="gc", face="gc")
    if dry_run:
        report = _preview(store, actor)
        _audit(store, actor, report)
        return report
    with store.catalog.exclusive(COLLECTOR_LOCK, blocking=blocking) as held:
        if not held:
            return GCReport(dry_run=False, skipped=True)
        report = _collect(store, actor)
    _audit(store, actor, report)
    return report


def _collect(store: Store, actor: Actor) -> GCReport:
    report = GCReport(dry_run=False)
    ts = now()
    planner = Planner(store)
    with store.catalog.read() as conn:
        expired = _expired(conn, ts)
    for trash_id in expired:
        plan = planner.delete([Target("trash", ref=str(trash_id))], actor, purge=True, action="expire")
        _count_expiry(report, plan)
    due = reclaim.run_due(store, ts)
    report.blobs += due.blobs
    report.bytes_freed += due.bytes
    with store.catalog.read() as conn:
        once, never = _unreferenced(conn, store, ts)
        unheld = _unheld(conn)
    with store.catalog.write() as conn:
        released = _sweep(store, conn, once, never, unheld, ts)
    report.blobs.extend(released.blobs)
    report.bytes_freed += released.bytes
    pending = store.pending_deletions()
    # one transaction: all of them, or none (a catalog gone meanwhile: the next round finishes them)
    report.finished = pending if store.finish_deletions(pending) else []
    report.orphan_files = _reclaim_orphan_files(store, ts - store.settings.gc_grace)
    report.strays = store.blobs.sweep_strays(ts - store.settings.gc_grace)
    report.strays += uploads.expire(store)
    report.strays += partials.sweep(store, now() - store.settings.upload_expiry)
    with store.catalog.read() as conn:
        report.waiting = waiting(conn, store, now())
    return report


@retrying
def _preview(store: Store, actor: Actor) -> GCReport:
    """What `collect` would reclaim in the catalog: every step in one transaction, rolled back, so the
    sweep counts the blobs the expiring trash entries leave unreferenced (files are not scanned)."""
    report = GCReport(dry_run=True)
    with store.catalog.transaction() as (conn, trans):
        ts = now()
        groups = [[Target("trash", ref=str(i))] for i in _expired(conn, ts)]
        for plan in Planner(store).preview_in(conn, groups, actor, purge=True, ts=ts):
            _count_expiry(report, plan)
        due = [
            r.digest for r in conn.execute(sa.select(t.reclaims.c.digest).where(t.reclaims.c.due_at <= ts))
        ]
        released = Released()
        store.retire_blobs(conn, due, ts, released)
        once, never = _unreferenced(conn, store, ts)
        swept = _sweep(store, conn, once, never, _unheld(conn), ts)
        report.waiting = waiting(conn, store, ts)
        trans.rollback()
    for r in (released, swept):
        report.blobs.extend(r.blobs)
        report.bytes_freed += r.bytes
    return report


def _count_expiry(report: GCReport, plan: Plan) -> None:
    if plan.ok:
        report.expired_trash.extend(plan.models)
        report.blobs.extend(b for b in plan.blobs if b not in plan.deferred)
        report.bytes_freed += plan.bytes_now


def _expired(conn: sa.Connection, ts: float) -> list[int]:
    return [r.id for r in conn.execute(sa.select(t.trash.c.id).where(t.trash.c.expires_at <= ts))]


def _unreferenced_query(*conds: Any) -> sa.Select[Any]:
    b = t.blobs
    return sa.select(b.c.digest, b.c.size, b.c.touched_at, b.c.ever_referenced).where(
        b.c.state == PRESENT, ~sa.exists().where(t.manifest_blobs.c.blob_digest == b.c.digest), *conds
    )


def _unreferenced(conn: sa.Connection, store: Store, ts: float) -> tuple[list[str], list[str]]:
    """Present blobs no manifest names and past their wait: (once referenced, past the reuse fuse),
    (never referenced, past the orphan grace)."""
    b = t.blobs
    once = conn.execute(
        _unreferenced_query(b.c.ever_referenced.is_(True), b.c.touched_at <= ts - store.reuse_fuse)
    )
    never = conn.execute(
        _unreferenced_query(b.c.ever_referenced.is_(False), b.c.touched_at <= ts - store.settings.gc_grace)
    )
    return [r.digest for r in once], [r.digest for r in never]


def waiting(conn: sa.Connection, store: Store, ts: float) -> list[dict[str, Any]]:
    """Unreferenced blobs not yet reclaimable, grouped by why, with the time the last of them goes."""
    out: dict[str, dict[str, Any]] = {}
    for r in conn.execute(_unreferenced_query()):
        wait = store.reuse_fuse if r.ever_referenced else store.settings.gc_grace
        until = float(r.touched_at) + wait
        if until <= ts:
            continue
        reason = WAIT_FUSE if r.ever_referenced else WAIT_GRACE
        group = out.setdefault(reason, {"bytes": 0, "blobs": [], "until": until, "reason": reason})
        group["bytes"] += int(r.size)
        group["blobs"].append(r.digest)
        group["until"] = max(group["until"], until)
    return list(out.values())


def _unheld(conn: sa.Connection) -> list[str]:
    """Manifests no repository, trash entry or index holds (left by two releases that skipped each
    other's locks)."""
    m = t.manifests.c.digest
    return [
        r.digest
        for r in conn.execute(
            sa.select(m).where(
                ~sa.exists().where(t.repo_manifests.c.manifest_digest == m),
                ~sa.exists().where(t.trash.c.manifest_digest == m),
                ~sa.exists().where(t.manifest_children.c.child_digest == m),
            )
        )
    ]


def _sweep(
    store: Store, conn: sa.Connection, once: list[str], never: list[str], unheld: list[str], ts: float
) -> Released:
    released = store.release(conn, manifests=unheld, ts=ts) if unheld else Released()
    store.retire_blobs(conn, once, ts, released)
    store.retire_blobs(conn, never, ts, released, fuse=store.settings.gc_grace, schedule=False)
    return released


def _audit(store: Store, actor: Actor, report: GCReport) -> None:
    with store.catalog.write() as conn:
        conn.execute(
            t.audit.insert().values(
                at=now(),
                actor=actor.name,
                face=actor.face,
                action="gc",
                target="store",
                dry_run=report.dry_run,
                outcome="ok",
                bytes_freed=0 if report.dry_run else report.bytes_freed,
                detail=json.dumps(
                    {
                        "expired_trash": report.expired_trash,
                        "blobs": report.blobs,
                        "orphan_files": report.orphan_files,
                        "strays": report.strays,
                    }
                ),
            )
        )


def _reclaim_orphan_files(store: Store, cutoff: float) -> list[str]:
    orphans = []
    for digest, mtime in store.blobs.iter_blobs():
        if mtime > cutoff:
            continue
        with store.catalog.read() as conn:
            known = conn.execute(sa.select(t.blobs.c.state).where(t.blobs.c.digest == digest)).first()
        if known is not None:
            continue
        with store.catalog.write() as conn:
            store._insert_ignore(
                conn,
                t.blobs,
                {"digest": digest, "size": 0, "state": DELETING, "created_at": now(), "touched_at": 0.0},
            )
        if store.finish_deletions([digest]):
            orphans.append(digest)
    return orphans


def fsck(
    store: Store, *, verify: bool = False, progress: Callable[[int, int], None] | None = None
) -> list[Problem]:
    """Check the invariants; an empty list means the store is consistent.

    The catalog is read in one snapshot, and every problem it suggests is confirmed under the row
    locks before it is reported, so a busy server beside it (deleting, uploading) never shows up as
    a problem of a consistent store.
    """
    return [p for p in _suspects(store, verify=verify, progress=progress) if _confirmed(store, p)]


def _suspects(
    store: Store, *, verify: bool, progress: Callable[[int, int], None] | None = None
) -> list[Problem]:
    problems: list[Problem] = []
    to_hash: list[tuple[str, int]] = []
    ts = now()
    with store.catalog.read() as conn:
        rows = conn.execute(sa.select(t.blobs)).all()
        referenced = {
            r.blob_digest for r in conn.execute(sa.select(t.manifest_blobs.c.blob_digest).distinct())
        }
        for m in conn.execute(
            sa.select(t.manifests.c.digest, t.manifests.c.content, t.manifests.c.media_type)
        ):
            if str(sha256_digest(bytes(m.content))) != m.digest:
                problems.append(Problem("manifest-digest", m.digest, "content does not hash to its digest"))
            try:
                refs = parse_manifest(bytes(m.content), m.media_type)
            except HangarError as e:
                problems.append(Problem("manifest-invalid", m.digest, str(e)))
                continue
            for b in refs.blobs:
                if b.digest not in referenced:
                    problems.append(
                        Problem("manifest-refs", m.digest, f"reference to {b.digest} not recorded")
                    )
        live_manifests = {r.digest for r in conn.execute(sa.select(t.manifests.c.digest))}
        for r in conn.execute(sa.select(t.tags.c.manifest_digest, t.tags.c.name)):
            if r.manifest_digest not in live_manifests:
                problems.append(
                    Problem("tag-dangling", r.name, f"points at missing manifest {r.manifest_digest}")
                )
        for r in conn.execute(sa.select(t.trash.c.id, t.trash.c.manifest_digest)):
            if r.manifest_digest not in live_manifests:
                problems.append(Problem("trash-dangling", str(r.id), f"missing manifest {r.manifest_digest}"))
        orphan_manifests = [d for d in live_manifests if not store.manifest_live(conn, d)]
        waits = {
            r.digest: float(r.touched_at)
            + (store.reuse_fuse if r.ever_referenced else store.settings.gc_grace)
            for r in rows
        }
    for d in orphan_manifests:
        problems.append(Problem("manifest-unheld", d, "manifest that nothing holds"))
    by_digest = {r.digest: r for r in rows}
    for digest in sorted(referenced):
        row = by_digest.get(digest)
        if row is None or row.state != PRESENT:
            problems.append(
                Problem("blob-missing", digest, "referenced by a manifest but not present in the catalog")
            )
    # One listing after the snapshot gives every stored blob's size (a bucket's LIST pages: no HEAD per
    # object); what it suggests is confirmed under the row lock in _confirmed, never trusted as is.
    listed = {d: (mtime, size) for d, mtime, size in store.blobs.iter_blob_sizes()}
    for row in rows:
        if row.state != PRESENT:
            problems.append(Problem("blob-deleting", row.digest, "deletion not finished (run hangar gc)"))
            continue
        size = listed[row.digest][1] if row.digest in listed else None
        if size is None:
            problems.append(Problem("blob-file-missing", row.digest, "catalog says present, file is missing"))
            continue
        if size != row.size:
            problems.append(
                Problem("blob-size", row.digest, f"file has {size} bytes, catalog says {row.size}")
            )
        if verify:
            to_hash.append((row.digest, size))
        if row.digest not in referenced and waits[row.digest] <= ts:
            problems.append(
                Problem("blob-unreferenced", row.digest, "unreferenced past its reuse fuse or grace")
            )
    for digest, (mtime, _size) in listed.items():
        if digest not in by_digest and mtime <= ts - store.settings.gc_grace:
            problems.append(Problem("file-unknown", digest, "blob file the catalog does not know"))
    problems += _verify_contents(store, to_hash, progress)
    return problems


VERIFY_THREADS = 8


def _hash_blob(store: Store, digest: str, size: int) -> str:
    path = store.blobs.local_path(digest)
    if path is not None:
        return sha256_file(path)
    h = hashlib.sha256()
    for chunk in store.blobs.stream(digest, 0, size):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def _verify_contents(
    store: Store, blobs: list[tuple[str, int]], progress: Callable[[int, int], None] | None
) -> list[Problem]:
    """Re-hash every listed blob, several at once (an object store answers each GET slowly but
    in parallel); `progress(bytes_done, bytes_total)` after each one."""
    total, done = sum(size for _, size in blobs), 0
    problems: list[Problem] = []
    if not blobs:
        return problems
    with ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        futures = {pool.submit(_hash_blob, store, d, size): (d, size) for d, size in blobs}
        for f in as_completed(futures):
            digest, size = futures[f]
            try:
                ok = f.result() == digest
            except FileNotFoundError:
                ok = True  # deleted since the snapshot: not a problem of its content
            if not ok:
                problems.append(Problem("blob-digest", digest, "content does not hash to its digest"))
            done += size
            if progress is not None:
                progress(done, total)
    return problems


def _confirmed(store: Store, p: Problem) -> bool:
    """Look at a suspected problem again under its row lock (a writer may have been mid-change)."""
    b, mb = t.blobs, t.manifest_blobs
    with store.catalog.write() as conn:
        if p.kind in ("blob-missing", "blob-file-missing", "blob-size", "blob-unreferenced", "blob-deleting"):
            row = store._lock_blob(conn, p.subject)
            referenced = store._blob_referenced(conn, p.subject)
            if p.kind == "blob-missing":
                return referenced and (row is None or row.state != PRESENT)
            if row is None:
                return False
            if p.kind == "blob-deleting":
                return bool(row.state != PRESENT)
            if row.state != PRESENT:
                return False
            if p.kind == "blob-file-missing":
                return store.blobs.size(p.subject) is None
            if p.kind == "blob-size":
                return store.blobs.size(p.subject) not in (None, int(row.size))
            full = conn.execute(sa.select(b.c.ever_referenced).where(b.c.digest == p.subject)).scalar()
            wait = store.reuse_fuse if full else store.settings.gc_grace
            return not referenced and float(row.touched_at) + wait <= now()
        if p.kind == "manifest-unheld":
            locked = conn.execute(
                sa.select(t.manifests.c.digest).where(t.manifests.c.digest == p.subject).with_for_update()
            ).first()
            return locked is not None and not store.manifest_live(conn, p.subject)
        if p.kind == "tag-dangling":
            digest = p.detail.rsplit(" ", 1)[-1]
            tagged = conn.execute(sa.select(sa.literal(1)).where(t.tags.c.manifest_digest == digest).limit(1))
            present = conn.execute(sa.select(t.manifests.c.digest).where(t.manifests.c.digest == digest))
            return tagged.first() is not None and present.first() is None
        if p.kind == "file-unknown":
            known = conn.execute(sa.select(b.c.digest).where(b.c.digest == p.subject)).first()
            return known is None and store.blobs.exists(p.subject)
        if p.kind == "manifest-refs":
            digest = p.detail.split(" ")[2]
            rec = conn.execute(
                sa.select(sa.literal(1)).where(mb.c.manifest_digest == p.subject, mb.c.blob_digest == digest)
            )
            alive = conn.execute(sa.select(t.manifests.c.digest).where(t.manifests.c.digest == p.subject))
            return alive.first() is not None and rec.first() is None
    return True
