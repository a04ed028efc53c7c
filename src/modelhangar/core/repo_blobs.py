"""Blobs belong to repositories (README "A short tour"), as distribution's repository links do.

A blob is visible in repository R when R links it (it was uploaded or mounted into R) or when a
manifest that is a member of R names it. A link never keeps a blob alive: GC and deletes reclaim
an unreferenced blob as before, and its links go with its row (`Store.finish_deletions`).
Visibility is one indexed query that goes from R's link, or from R's memberships to the
(manifest, blob) primary key of `manifest_blobs`, so its cost does not grow with the number of
manifests elsewhere that share a blob.

Lock order is the store's: the repository row, then the blob row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from modelhangar.core import permissions, uploads
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.errors import NotFound
from modelhangar.core.recency import touch_granularity
from modelhangar.core.store import PRESENT, Actor, Released, Statements, Store, now
from modelhangar.core.uploads import BlobDeletion

MAX_NAMED = 20
"""At most this many manifests are named when a delete is refused because they use the blob."""


def _members_naming(repo_id: Any, digest: Any) -> sa.Select[Any]:
    """R's manifests that name `digest`: R's memberships, each probing manifest_blobs' primary key.

    The probe is a correlated EXISTS, not a join, so that SQLite (which keeps no statistics of how
    widely a blob is shared) cannot start from every manifest naming the blob instead.
    """
    names = sa.exists().where(
        t.manifest_blobs.c.manifest_digest == t.repo_manifests.c.manifest_digest,
        t.manifest_blobs.c.blob_digest == digest,
    )
    return sa.select(t.repo_manifests.c.manifest_digest).where(
        t.repo_manifests.c.repository_id == repo_id, names
    )


def _linked(repo_id: Any, digest: Any) -> sa.Select[Any]:
    return sa.select(sa.literal(1)).where(
        t.repo_blobs.c.repository_id == repo_id, t.repo_blobs.c.blob_digest == digest
    )


def _visible(repo_id: Any, digest: Any) -> sa.ColumnElement[bool]:
    return sa.or_(sa.exists(_linked(repo_id, digest)), sa.exists(_members_naming(repo_id, digest)))


_DIGEST: sa.BindParameter[str] = sa.bindparam("digest")
_VISIBLE_BLOB = permissions.visible_variants(
    sa.select(t.blobs.c.size, t.blobs.c.touched_at)
    .select_from(t.blobs.join(t.repositories, t.repositories.c.name_key == sa.bindparam("repo_key")))
    .where(t.blobs.c.digest == _DIGEST, t.blobs.c.state == PRESENT, _visible(t.repositories.c.id, _DIGEST))
)
"""(size, touched_at) of a present blob visible in a repository (to each kind of reader): one query,
built once (building and compiling it per request cost more than running it: issue 16, small
requests)."""


def _visible_blob(repository: str, digest: str, actor: Actor | None) -> tuple[sa.Select[Any], dict[str, Any]]:
    """`_VISIBLE_BLOB` for `actor` (who must be able to read the repository) and its parameters."""
    q, params = permissions.for_reader(_VISIBLE_BLOB, actor)
    return q, {**params, "repo_key": repository.lower(), "digest": digest}


def _size_in(conn: sa.Connection, repository: str, digest: str, actor: Actor | None = None) -> int | None:
    """The size of a present blob visible in `repository` (to `actor`), in one query (None if not)."""
    row = conn.execute(*_visible_blob(repository, digest, actor)).first()
    return None if row is None else int(row.size)


def blob_size(store: Store, repository: str, digest: str, actor: Actor | None = None) -> int | None:
    """Size of a blob that `repository` may serve (to `actor`), or None: one statement."""
    row = store.catalog.read_once(*_visible_blob(repository, digest, actor))
    return None if row is None else int(row.size)


@retrying
def claim(store: Store, repository: str, digest: str, actor: Actor | None = None) -> int | None:
    """`Store.reuse_blob`, for a blob visible in `repository` (to `actor`) only: a pusher's HEAD
    resets the fuse.

    As `Store.reuse_blob`, the touch is written only when the stored one is older than the touch
    granularity (`core/recency.py`, README `HANGAR_REUSE_FUSE`); a fresher one answers from one
    read, so a blob under a storm of HEADs costs one write per few seconds, not one per request."""
    row = store.catalog.read_once(*_visible_blob(repository, digest, actor))
    if row is None:
        return None
    granularity = touch_granularity(store.settings.reuse_fuse)
    if granularity > 0 and row.touched_at >= now() - granularity:
        return int(row.size) if store.blobs.exists(digest) else None
    with store.catalog.write() as conn:
        row = store._lock_blob(conn, digest)
        if row is None or row.state != PRESENT or not store.blobs.exists(digest):
            return None
        size = _size_in(conn, repository, digest, actor)
        if size is None:
            return None
        conn.execute(t.blobs.update().where(t.blobs.c.digest == digest).values(touched_at=now()))
        return size


def check_push(conn: sa.Connection, repository: str, actor: Actor) -> None:
    """Raise NotFound (may not even see it) or Denied unless `actor` may push into `repository`:
    write access to it, or for a new one the right to create it in its namespace. One `actor` may
    not see is refused as an absent one would be where that differs (another account's namespace)."""
    try:
        row = permissions.access(conn, actor, repository, "write")
    except NotFound:
        permissions.owner_for_new(conn, actor, repository)
        raise
    if row is None:
        permissions.owner_for_new(conn, actor, repository)


def may_push(store: Store, repository: str, actor: Actor) -> None:
    """`check_push` in its own read (before an upload session starts)."""
    if actor.admin:
        return
    with store.catalog.read() as conn:
        check_push(conn, repository, actor)


def add_link(
    store: Store, conn: sa.Connection, repository: str, digest: str, actor: Actor | None = None
) -> None:
    """Link `digest` into `repository` (created if need be, owned as `actor` would own it: then
    `actor` must be allowed to push there) inside the caller's transaction."""
    repo_id = store._repository_id(
        conn, repository, create=True, actor=actor, need=None if actor is None else "write"
    )
    store._insert_ignore(
        conn, t.repo_blobs, {"repository_id": repo_id, "blob_digest": digest, "created_at": now()}
    )


def linker(store: Store, repository: str, digest: str, actor: Actor | None = None) -> Statements:
    """The `also=` hook of `Store.commit_blob`/`import_blob_file` that links the blob it installs."""
    return lambda conn: add_link(store, conn, repository, digest, actor)


@retrying
def mount(store: Store, repository: str, source: str, digest: str, actor: Actor | None = None) -> int | None:
    """Link a blob visible in `source` into `repository` (a reuse: it resets the fuse); returns its
    size, or None (nothing changes) when `source` cannot serve it (to `actor`, who needs read access
    to `source` and push access to `repository`: NotFound / Denied otherwise)."""
    with store.catalog.transaction() as (conn, trans):
        repo_id = store._repository_id(
            conn, repository, create=True, actor=actor, need=None if actor is None else "write"
        )
        row = store._lock_blob(conn, digest)
        if row is None or row.state != PRESENT or not store.blobs.exists(digest):
            return None
        size = _size_in(conn, source, digest, actor)
        if size is None:
            return None  # the transaction rolls back: no empty repository is left behind
        ts = now()
        store._insert_ignore(
            conn, t.repo_blobs, {"repository_id": repo_id, "blob_digest": digest, "created_at": ts}
        )
        conn.execute(t.blobs.update().where(t.blobs.c.digest == digest).values(touched_at=ts))
        trans.commit()
        return size


@retrying
def repository_known(store: Store, repository: str, actor: Actor | None = None) -> bool:
    """Does the repository hold anything (a manifest, a tag or a blob link), that `actor` may read?"""
    repo = t.repositories.c.id
    q = sa.select(sa.literal(1)).where(
        t.repositories.c.name_key == repository.lower(),
        sa.or_(
            sa.exists().where(t.repo_manifests.c.repository_id == repo),
            sa.exists().where(t.tags.c.repository_id == repo),
            sa.exists().where(t.repo_blobs.c.repository_id == repo),
        ),
    )
    readable = None if actor is None else permissions.visible(actor)
    if readable is not None:
        q = q.where(readable)
    with store.catalog.read() as conn:
        return conn.execute(q).first() is not None


BlobWithdrawal = Literal["deleted", "referenced", "unknown"]


@dataclass(frozen=True)
class Withdrawal:
    """What an explicit blob delete in one repository did."""

    outcome: BlobWithdrawal
    manifests: list[str] = field(default_factory=list)
    """When `referenced`: (some of) the repository's manifests that name the blob."""
    blob: BlobDeletion | None = None
    """When `deleted`: what became of the blob itself, if nothing linked or named it any longer."""


@retrying
def withdraw(store: Store, repository: str, digest: str, actor: Actor) -> Withdrawal:
    """Delete a blob from one repository: drop its link there, unless a manifest of the repository
    names it (`referenced`: nothing changes) or the repository cannot serve it (`unknown`).

    Once no repository links it, the blob itself is retired as any unreferenced blob is (a live or
    trashed manifest elsewhere keeps it; a writer's recent use leaves it to GC, the reuse fuse).
    A repository `actor` may not read is `unknown`; one it may read but not change raises Denied.
    """
    released = Released()
    blob: BlobDeletion | None = None
    with store.catalog.transaction() as (conn, trans):
        repo = conn.execute(
            sa.select(
                t.repositories.c.id,
                t.repositories.c.name,
                t.repositories.c.owner,
                t.repositories.c.visibility,
            )
            .where(t.repositories.c.name_key == repository.lower())
            .with_for_update()  # no manifest of the repository can be pushed meanwhile
        ).first()
        if repo is None:
            return Withdrawal("unknown")
        try:
            permissions.check(actor, "write", repo.name, repo.owner, repo.visibility)
        except NotFound:
            return Withdrawal("unknown")
        repo_id = repo.id
        row = store._lock_blob(conn, digest)
        if row is None or row.state != PRESENT:
            return Withdrawal("unknown")
        named = conn.execute(_members_naming(repo_id, digest).limit(MAX_NAMED)).scalars().all()
        if named:
            return Withdrawal("referenced", sorted(named))
        unlinked = conn.execute(
            t.repo_blobs.delete().where(
                t.repo_blobs.c.repository_id == repo_id, t.repo_blobs.c.blob_digest == digest
            )
        ).rowcount
        if not unlinked:
            return Withdrawal("unknown")
        store._drop_repository_if_empty(conn, repo_id)
        linked_elsewhere = conn.execute(
            sa.select(sa.literal(1)).where(t.repo_blobs.c.blob_digest == digest).limit(1)
        ).first()
        if linked_elsewhere is None:
            blob, released = uploads.retire_loose_blob(
                store, conn, digest, actor, target=f"{repository}@{digest}"
            )
        trans.commit()
    store.finish_deletions(released.blobs)
    return Withdrawal("deleted", blob=blob)
