"""Online garbage collection and the consistency check, both safe beside running servers.

GC never needs a read-only window: it expires trash entries through the planner, then retires
unreferenced blobs with the same row-lock protocol every delete uses (see `core/store.py`),
finishes deletions a crash interrupted, and reclaims files the catalog does not know. A file
without a row gets a `deleting` row first (insert-if-absent, so an uploader that is installing
that very digest wins the race), then goes through the ordinary second phase.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from modelhangar.core import partials, uploads
from modelhangar.core.blobstore import sha256_file
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.digests import sha256_digest
from modelhangar.core.manifests import parse_manifest
from modelhangar.core.planner import Plan, Planner, Target
from modelhangar.core.store import DELETING, PRESENT, Actor, Released, Store, now


@dataclass
class GCReport:
    dry_run: bool
    expired_trash: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    finished: list[str] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Problem:
    kind: str
    subject: str
    detail: str


def collect(store: Store, *, dry_run: bool = False, actor: Actor | None = None) -> GCReport:
    """Reclaim everything nothing references (or, with dry_run, say what that would be)."""
    actor = actor or Actor(name="gc", face="gc")
    if dry_run:
        report = _preview(store, actor)
        _audit(store, actor, report)
        return report
    report = GCReport(dry_run=False)
    ts = now()
    planner = Planner(store)
    with store.catalog.read() as conn:
        expired = _expired(conn, ts)
    for trash_id in expired:
        plan = planner.delete([Target("trash", ref=str(trash_id))], actor, purge=True, action="expire")
        _count_expiry(report, plan)
    cutoff = ts - store.settings.gc_grace
    with store.catalog.read() as conn:
        unreferenced = _unreferenced(conn, cutoff)
        unheld = _unheld(conn)
    with store.catalog.write() as conn:
        released = _sweep(store, conn, unreferenced, unheld, ts, cutoff)
    report.blobs.extend(released.blobs)
    report.bytes_freed += released.bytes
    pending = store.pending_deletions()
    store.finish_deletions(pending)
    report.finished = pending
    report.orphan_files = _reclaim_orphan_files(store, cutoff)
    report.strays = store.blobs.sweep_strays(cutoff)
    report.strays += uploads.expire(store)
    report.strays += partials.sweep(store, now() - store.settings.upload_expiry)
    _audit(store, actor, report)
    return report


@retrying
def _preview(store: Store, actor: Actor) -> GCReport:
    """What `collect` would reclaim in the catalog: every step in one transaction, rolled back, so the
    sweep counts the blobs the expiring trash entries leave unreferenced (files are not scanned)."""
    report = GCReport(dry_run=True)
    with store.catalog.transaction() as (conn, trans):
        ts = now()
        cutoff = ts - store.settings.gc_grace
        groups = [[Target("trash", ref=str(i))] for i in _expired(conn, ts)]
        for plan in Planner(store).preview_in(conn, groups, actor, purge=True, ts=ts):
            _count_expiry(report, plan)
        released = _sweep(store, conn, _unreferenced(conn, cutoff), _unheld(conn), ts, cutoff)
        trans.rollback()
    report.blobs.extend(released.blobs)
    report.bytes_freed += released.bytes
    return report


def _count_expiry(report: GCReport, plan: Plan) -> None:
    if plan.ok:
        report.expired_trash.extend(plan.models)
        report.blobs.extend(plan.blobs)
        report.bytes_freed += plan.bytes_freed


def _expired(conn: sa.Connection, ts: float) -> list[int]:
    return [r.id for r in conn.execute(sa.select(t.trash.c.id).where(t.trash.c.expires_at <= ts))]


def _unreferenced(conn: sa.Connection, cutoff: float) -> list[str]:
    """Present blobs no manifest names, untouched since `cutoff`."""
    return [
        r.digest
        for r in conn.execute(
            sa.select(t.blobs.c.digest).where(
                t.blobs.c.state == PRESENT,
                t.blobs.c.touched_at <= cutoff,
                ~sa.exists().where(t.manifest_blobs.c.blob_digest == t.blobs.c.digest),
            )
        )
    ]


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
    store: Store, conn: sa.Connection, unreferenced: list[str], unheld: list[str], ts: float, cutoff: float
) -> Released:
    released = store.release(conn, manifests=unheld, ts=ts) if unheld else Released()
    store.retire_blobs(conn, unreferenced, cutoff, released)
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


def fsck(store: Store, *, verify: bool = False) -> list[Problem]:
    """Check the invariants; an empty list means the store is consistent."""
    problems: list[Problem] = []
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
            except ValueError as e:
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
    for d in orphan_manifests:
        problems.append(Problem("manifest-unheld", d, "manifest that nothing holds"))
    by_digest = {r.digest: r for r in rows}
    for digest in sorted(referenced):
        row = by_digest.get(digest)
        if row is None or row.state != PRESENT:
            problems.append(
                Problem("blob-missing", digest, "referenced by a manifest but not present in the catalog")
            )
    for row in rows:
        if row.state != PRESENT:
            problems.append(Problem("blob-deleting", row.digest, "deletion not finished (run hangar gc)"))
            continue
        size = store.blobs.size(row.digest)
        if size is None:
            problems.append(Problem("blob-file-missing", row.digest, "catalog says present, file is missing"))
            continue
        if size != row.size:
            problems.append(
                Problem("blob-size", row.digest, f"file has {size} bytes, catalog says {row.size}")
            )
        if verify:
            path = store.blobs.local_path(row.digest)
            if path is not None and sha256_file(path) != row.digest:
                problems.append(Problem("blob-digest", row.digest, "content does not hash to its digest"))
        if row.digest not in referenced and row.touched_at <= ts - store.settings.gc_grace:
            problems.append(Problem("blob-unreferenced", row.digest, "unreferenced past the GC grace period"))
    for digest, mtime in store.blobs.iter_blobs():
        if digest not in by_digest and mtime <= ts - store.settings.gc_grace:
            problems.append(Problem("file-unknown", digest, "blob file the catalog does not know"))
    return problems
