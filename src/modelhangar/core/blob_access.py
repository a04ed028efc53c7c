"""Who may use a blob by its digest alone (Ollama's `/api/blobs/<digest>` and `/api/create`'s `files`).

Ollama's blob API names blobs by digest, with no repository. So that nobody builds a model on a
private model's layer by knowing its digest (and then reads it through that model), a user may
use a blob only when it is one of theirs: they uploaded it (its bytes, verified against the
digest: proof they hold them), or a model they may read names it. Admins may use every blob.
An upload of a blob the store already holds is then verified and recorded, not skipped.
"""

from __future__ import annotations

import sqlalchemy as sa

from modelhangar.core import permissions
from modelhangar.core.catalog import schema as t
from modelhangar.core.store import Actor, Statements, Store, now


def may_use(store: Store, actor: Actor, digest: str) -> bool:
    """Whether `actor` may name the blob `digest` without uploading it (see the module)."""
    if actor.admin:
        return True
    with store.catalog.read() as conn:
        if actor.principal is not None:
            mine = sa.select(sa.literal(1)).where(
                t.uploader_blobs.c.principal == actor.principal, t.uploader_blobs.c.blob_digest == digest
            )
            if conn.execute(mine).first() is not None:
                return True
        readable = (
            sa.select(sa.literal(1))
            .select_from(
                t.manifest_blobs.join(
                    t.repo_manifests, t.repo_manifests.c.manifest_digest == t.manifest_blobs.c.manifest_digest
                ).join(t.repositories, t.repositories.c.id == t.repo_manifests.c.repository_id)
            )
            .where(t.manifest_blobs.c.blob_digest == digest)
            .limit(1)
        )
        clause = permissions.visible(actor)
        if clause is not None:
            readable = readable.where(clause)
        return conn.execute(readable).first() is not None


def reuse(store: Store, actor: Actor, digest: str) -> int | None:
    """The blob's size, touched against a concurrent delete (`Store.reuse_blob`), when `actor` may use
    it; None when it is absent or not theirs to name: the same answer, so neither leaks."""
    return store.reuse_blob(digest) if may_use(store, actor, digest) else None


def record_upload(store: Store, actor: Actor, digest: str) -> Statements | None:
    """Statements (run in the transaction that installs the blob) noting that `actor` uploaded it.

    An insert-if-absent: two uploads of the same bytes by the same user may commit at once (on
    PostgreSQL neither sees the other's row before it commits)."""
    if actor.principal is None:
        return None
    principal = actor.principal

    def also(conn: sa.Connection) -> None:
        store._insert_ignore(
            conn, t.uploader_blobs, {"principal": principal, "blob_digest": digest, "created_at": now()}
        )

    return also
