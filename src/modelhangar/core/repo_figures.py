"""The figures the model list sorts by, kept on each repository row (README, "The web UI").

`repositories.size` is the bytes of the distinct blobs its manifests name (an index's children
included); `repositories.modified_at` is when its newest tag changed, else when it was made;
`repositories.versions` counts its manifests (the list shows a repository with one). Sorting
a page by them is an indexed LIMIT (`ix_repositories_size`, `ix_repositories_modified`), never an
aggregate over the store per request. Every writer that changes a repository's memberships or
tags calls `refresh` for it in the same transaction (`core/store.py`, `core/planner.py`,
`core/trash.py`); that costs what the repository itself holds (README, "Safety rules" 4).

These figures only order the list. The numbers a page shows (size, and what a delete frees) are
computed for the page's rows when it is drawn (`core/browse.py`); tests keep both equal.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t

BATCH = 500


def sizes_of(conn: sa.Connection, ids: list[int]) -> dict[int, int]:
    """{repository id: bytes of the distinct present blobs its manifests' closure names}, in one query."""
    rm, mc, mb, b = t.repo_manifests, t.manifest_children, t.manifest_blobs, t.blobs
    closure = (
        sa.select(rm.c.repository_id.label("rid"), rm.c.manifest_digest.label("d"))
        .where(rm.c.repository_id.in_(ids))
        .cte("closure", recursive=True)
    )
    closure = closure.union(
        sa.select(closure.c.rid, mc.c.child_digest).join(closure, mc.c.parent_digest == closure.c.d)
    )
    named = (
        sa.select(closure.c.rid, mb.c.blob_digest)
        .join(mb, mb.c.manifest_digest == closure.c.d)
        .distinct()
        .subquery()
    )
    q = (
        sa.select(named.c.rid, sa.func.sum(b.c.size))
        .join(b, b.c.digest == named.c.blob_digest)
        .where(b.c.state == "present")
        .group_by(named.c.rid)
    )
    return {int(rid): int(total or 0) for rid, total in conn.execute(q)}


def refresh(conn: sa.Connection, repo_ids: Iterable[int]) -> None:
    """Recompute the list's figures of these repositories (a repository no longer there is skipped)."""
    ids = sorted(set(repo_ids))
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        sizes = sizes_of(conn, chunk)
        newest: dict[int, float] = dict(
            conn.execute(
                sa.select(t.tags.c.repository_id, sa.func.max(t.tags.c.modified_at))
                .where(t.tags.c.repository_id.in_(chunk))
                .group_by(t.tags.c.repository_id)
            ).all()
        )
        versions: dict[int, int] = dict(
            conn.execute(
                sa.select(t.repo_manifests.c.repository_id, sa.func.count())
                .where(t.repo_manifests.c.repository_id.in_(chunk))
                .group_by(t.repo_manifests.c.repository_id)
            ).all()
        )
        created: dict[int, float] = dict(
            conn.execute(
                sa.select(t.repositories.c.id, t.repositories.c.created_at).where(
                    t.repositories.c.id.in_(chunk)
                )
            ).all()
        )
        rows = [
            {
                "rid": rid,
                "size": sizes.get(rid, 0),
                "modified": newest.get(rid) or created[rid],
                "versions": versions.get(rid, 0),
            }
            for rid in chunk
            if rid in created
        ]
        if rows:
            conn.execute(
                t.repositories.update()
                .where(t.repositories.c.id == sa.bindparam("rid"))
                .values(
                    size=sa.bindparam("size"),
                    modified_at=sa.bindparam("modified"),
                    versions=sa.bindparam("versions"),
                ),
                rows,
            )
