"""The trash: deleted models kept (manifests and blobs) until their retention ends."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import sqlalchemy as sa

from modelhangar.core import listing, repo_figures
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.errors import Conflict, NotFound
from modelhangar.core.names import InvalidName, ModelName, parse_name
from modelhangar.core.planner import Plan, Planner, Target
from modelhangar.core.store import Actor, Store, now


@dataclass(frozen=True)
class TrashEntry:
    id: int
    repository: str
    tag: str
    manifest_digest: str
    deleted_at: float
    expires_at: float
    actor: str
    face: str
    size: int
    replaced_by: str | None = None
    """Set when an overwrite of the tag pushed this version out: the manifest that took its place."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry(row: Any, size: int) -> TrashEntry:
    return TrashEntry(
        id=row.id,
        repository=row.repository,
        tag=row.tag,
        manifest_digest=row.manifest_digest,
        deleted_at=row.deleted_at,
        expires_at=row.expires_at,
        actor=row.actor,
        face=row.face,
        size=size,
        replaced_by=row.replaced_by,
    )


def list_trash(store: Store, actor: Actor | None = None) -> list[TrashEntry]:
    """The trash, newest first: everything, or what `actor` may restore (its own and its orgs')."""
    q = (
        sa.select(t.trash, t.manifests.c.total_size)
        .join(t.manifests, t.manifests.c.digest == t.trash.c.manifest_digest)
        .order_by(t.trash.c.deleted_at.desc(), t.trash.c.id.desc())
    )
    with store.catalog.read() as conn:
        rows = conn.execute(q).all()
    return [_entry(r, int(r.total_size)) for r in rows if actor is None or actor.acts_for(r.owner)]


def find_entry(store: Store, ident: str, matches: Any = None, actor: Actor | None = None) -> TrashEntry:
    """A trash entry (of those `actor` may restore) by id, or the newest one deleted under the model
    name `ident`.

    Names match as everywhere else: `tiny` is `registry.ollama.ai/library/tiny:latest`, any case.
    """
    entries = list_trash(store, actor)
    if ident.isdigit():
        for e in entries:
            if e.id == int(ident):
                return e
    try:
        name = parse_name(ident)
        wanted = (name.repository.lower(), name.tag.lower())
    except InvalidName:
        wanted = None
    for e in entries:
        if (
            (e.repository.lower(), e.tag.lower()) == wanted
            or f"{e.repository}:{e.tag}".lower() == ident.lower()
            or (matches is not None and matches(e))
        ):
            return e
    raise NotFound(f"no trash entry {ident!r}")


@retrying
def restore(store: Store, entry_id: int, actor: Actor, as_name: ModelName | None = None) -> TrashEntry:
    """Put a trashed model back under its name (or `as_name`), with the same digest and times."""
    with store.catalog.write() as conn:
        row = conn.execute(sa.select(t.trash).where(t.trash.c.id == entry_id).with_for_update()).first()
        if row is None or not actor.acts_for(row.owner):  # another account's entry is not there
            raise NotFound(f"no trash entry {entry_id}")
        repository, tag = (row.repository, row.tag) if as_name is None else (as_name.repository, as_name.tag)
        meta = json.loads(row.meta or "{}")
        if as_name is None:
            repo_id = store._repository_id(
                conn, repository, create=True, owner=row.owner, visibility=meta.get("visibility"), actor=actor
            )
        else:  # under another name it is a new model of whoever restores it, as a copy would be
            repo_id = store._repository_id(conn, repository, create=True, actor=actor, need="write")
        assert repo_id is not None
        if tag:
            taken = conn.execute(
                sa.select(t.tags.c.manifest_digest).where(
                    t.tags.c.repository_id == repo_id, t.tags.c.name_key == tag.lower()
                )
            ).first()
            if taken is not None:
                again = " again" if as_name is None else ""
                raise Conflict(f"{repository}:{tag} exists{again}; delete or rename it first")
        ts = now()
        store._insert_ignore(
            conn,
            t.repo_manifests,
            {"repository_id": repo_id, "manifest_digest": row.manifest_digest, "created_at": ts},
        )
        if tag:
            conn.execute(
                t.tags.insert().values(
                    repository_id=repo_id,
                    name_key=tag.lower(),
                    name=tag,
                    manifest_digest=row.manifest_digest,
                    created_at=meta.get("created_at", ts),
                    modified_at=meta.get("modified_at", ts),
                    last_used_at=meta.get("last_used_at", ts),
                )
            )
            listing.refresh(conn, repo_id, tag.lower())  # its listing entry, in the tag's row
        conn.execute(t.trash.delete().where(t.trash.c.id == entry_id))
        repo_figures.refresh(conn, [repo_id])
        conn.execute(
            t.audit.insert().values(
                at=ts,
                actor=actor.name,
                face=actor.face,
                action="restore",
                target=f"{repository}:{tag}" if tag else repository,
                dry_run=False,
                outcome="ok",
                bytes_freed=0,
                detail=json.dumps({"trash_id": entry_id, "manifest": row.manifest_digest}),
                token_name=actor.token,
            )
        )
    return replace(_entry(row, 0), repository=repository, tag=tag)


def empty_trash(
    store: Store, actor: Actor, *, older_than: float | None = None, dry_run: bool = False
) -> list[Plan]:
    """Purge the trash entries (those `actor` may restore) deleted at least `older_than` seconds ago (all
    when None), or preview it.

    All of them go through one planner call (audited as `purge`), so a preview counts the blobs only
    the purged entries share, exactly as the purge frees them. Entries restored or expired meanwhile
    are left out and the rest retried. Returns that one plan, or no plan when nothing qualifies.
    """
    cutoff = None if older_than is None else now() - older_than
    ids = [str(e.id) for e in list_trash(store, actor) if cutoff is None or e.deleted_at <= cutoff]
    planner = Planner(store)
    while ids:
        targets = [Target("trash", ref=i) for i in ids]
        plan = planner.delete(targets, actor, dry_run=dry_run, purge=True, action="purge")
        gone = {str(x).removeprefix("trash:") for x in plan.not_found}
        if not gone or plan.blockers:
            return [plan]
        ids = [i for i in ids if i not in gone]
    return []
