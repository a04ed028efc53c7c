"""The reclaim timer: blobs a delete left for the reuse fuse are freed when their fuse ends.

A delete frees its unshared blobs at once, except a blob a writer touched within the reuse fuse
(`HANGAR_REUSE_FUSE`, at most 60 s): a client that just uploaded it or was told by a HEAD that it
exists may be about to name it in a manifest (README, "Safety rules" 1 and 2). Such a blob is
recorded in `reclaims` with its due time in the delete's own transaction; every server polls the
earliest due time (one indexed read a second) and retires what is due through the same row-lock
protocol every delete uses, so any server, or `hangar gc`, may do it, once. A blob touched again
meanwhile is simply deferred again; one named by a manifest again is dropped from the list.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.store import Released, Store, now

BATCH = 500


def next_due(store: Store) -> float | None:
    """When the earliest scheduled reclaim is due (None when nothing waits)."""
    with store.catalog.read() as conn:
        due = conn.execute(sa.select(sa.func.min(t.reclaims.c.due_at))).scalar()
    return None if due is None else float(due)


@retrying
def _retire_due(store: Store, ts: float) -> Released:
    released = Released()
    with store.catalog.write() as conn:
        due = [
            r.digest
            for r in conn.execute(
                sa.select(t.reclaims.c.digest)
                .where(t.reclaims.c.due_at <= ts)
                .order_by(t.reclaims.c.due_at)
                .limit(BATCH)
            )
        ]
        if not due:
            return released
        store.retire_blobs(conn, due, ts, released)
        if released.blobs:
            conn.execute(
                t.audit.insert().values(
                    at=ts,
                    actor="reclaim",
                    face="timer",
                    action="reclaim",
                    target=", ".join(released.blobs[:20]) + (" ..." if len(released.blobs) > 20 else ""),
                    dry_run=False,
                    outcome="ok",
                    bytes_freed=released.bytes,
                    detail=json.dumps({"blobs": released.blobs, "deferred": released.deferred}),
                )
            )
    return released


def run_due(store: Store, at: float | None = None) -> Released:
    """Retire every blob whose fuse has ended (audited as `reclaim`); returns what went."""
    total = Released()
    while True:
        released = _retire_due(store, now() if at is None else at)
        store.finish_deletions(released.blobs)
        total.blobs += released.blobs
        total.bytes += released.bytes
        total.deferred += released.deferred
        total.sizes.update(released.sizes)
        if len(released.blobs) + len(released.deferred) < BATCH:
            return total
