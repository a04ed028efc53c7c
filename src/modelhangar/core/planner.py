"""The one deletion planner every face, the CLI, retention and GC delete through.

`Planner.delete` resolves what to delete, finds what blocks it (missing permission, dependents
of any kind), and applies the deletion inside one catalog transaction: tags go, memberships
go, and manifests and blobs that nothing holds any longer go too (or, with the trash on, the
trash entry keeps them until it expires). A dry run runs exactly the same code and rolls the
transaction back, so a preview never disagrees with what a real delete would have done.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.store import Actor, Released, Store, now

TargetKind = Literal["tag", "manifest", "repository", "trash"]


@dataclass(frozen=True)
class Target:
    """What to delete: a tag, a manifest of a repository, a whole repository, or a trash entry."""

    kind: TargetKind
    repository: str = ""
    ref: str = ""

    def __str__(self) -> str:
        if self.kind == "tag":
            return f"{self.repository}:{self.ref}"
        if self.kind == "manifest":
            return f"{self.repository}@{self.ref}"
        if self.kind == "trash":
            return f"trash:{self.ref}"
        return self.repository


@dataclass(frozen=True)
class Blocker:
    kind: str
    id: str
    reason: str


@dataclass
class Plan:
    """What a deletion removes, frees and is blocked by; also what it did, once executed."""

    targets: list[str]
    actor: str
    face: str
    dry_run: bool
    trash: bool
    models: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    reclaimed: str = "nothing"
    blockers: list[Blocker] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    trash_ids: list[int] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    executed: bool = False

    @property
    def ok(self) -> bool:
        return not self.blockers and not self.not_found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Resolved:
    """Rows a plan touches, locked for the rest of the transaction."""

    tag_rows: list[tuple[int, str, str, str, Any]] = field(
        default_factory=list
    )  # repo_id, repo, tag, digest, row
    memberships: list[tuple[int, str]] = field(default_factory=list)
    untag: list[tuple[int, str]] = field(default_factory=list)
    trash_rows: list[Any] = field(default_factory=list)
    repos: dict[int, tuple[str, str | None]] = field(default_factory=dict)


class Planner:
    """Plans and carries out deletions over a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _new_plan(self, targets: list[Target], actor: Actor, *, dry_run: bool, purge: bool) -> Plan:
        return Plan(
            targets=[str(x) for x in targets],
            actor=actor.name,
            face=actor.face,
            dry_run=dry_run,
            trash=not purge and self.store.settings.trash_retention > 0,
        )

    @retrying
    def delete(
        self,
        targets: list[Target],
        actor: Actor,
        *,
        dry_run: bool = False,
        purge: bool = False,
        action: str = "delete",
    ) -> Plan:
        """Delete the targets as one unit (or preview it). Refused plans change nothing."""
        if dry_run:
            return self.preview([targets], actor, purge=purge, action=action)[0]
        plan = self._new_plan(targets, actor, dry_run=False, purge=purge)
        released = Released()
        with self.store.catalog.transaction() as (conn, trans):
            ts = now()
            res = self._resolve(conn, targets, plan)
            self._find_blockers(conn, res, actor, plan)
            if plan.ok:
                released = self._apply(conn, res, actor, plan, ts)
                plan.executed = True
                self._audit(conn, plan, action, ts)
                trans.commit()
            else:
                trans.rollback()
        if plan.executed:
            self.store.finish_deletions(released.blobs)
        else:
            with self.store.catalog.write() as conn:
                self._audit(conn, plan, action, now())
        return plan

    @retrying
    def preview(
        self, groups: list[list[Target]], actor: Actor, *, purge: bool = False, action: str = "delete"
    ) -> list[Plan]:
        """Preview deleting each group of targets in turn, as successive `delete` calls would.

        All groups run in one transaction that is rolled back, so each plan sees what the ones before it
        removed: a blob only the selected models share is freed (and counted) by the last of them, exactly
        as the real deletes free it. A refused group's effects are undone before the next group runs. With
        the trash on, each group's entries are also expired in the simulation, so that `bytes_freed` is
        what the trash frees once all of them expire.
        """
        with self.store.catalog.transaction() as (conn, trans):
            ts = now()
            plans = self.preview_in(conn, groups, actor, purge=purge, ts=ts)
            trans.rollback()
        with self.store.catalog.write() as conn:
            for plan in plans:
                self._audit(conn, plan, action, ts)
        return plans

    def preview_in(
        self, conn: sa.Connection, groups: list[list[Target]], actor: Actor, *, purge: bool, ts: float
    ) -> list[Plan]:
        """`preview`'s work inside the caller's transaction, which the caller must roll back."""
        plans = [self._new_plan(g, actor, dry_run=True, purge=purge) for g in groups]
        for targets, plan in zip(groups, plans, strict=True):
            res = self._resolve(conn, targets, plan)
            self._find_blockers(conn, res, actor, plan)
            if plan.ok:
                self._apply(conn, res, actor, plan, ts, keep_expiry=True)
            else:  # show what it would remove, but let later groups not count on it
                savepoint = conn.begin_nested()
                self._apply(conn, res, actor, plan, ts)
                savepoint.rollback()
        return plans

    # ------------------------------------------------------------------ resolving

    def _repo(self, conn: sa.Connection, name: str, res: _Resolved) -> int | None:
        row = conn.execute(
            sa.select(t.repositories.c.id, t.repositories.c.name, t.repositories.c.owner)
            .where(t.repositories.c.name_key == name.lower())
            .with_for_update()  # repository, then tags, then manifests, then blobs: as every writer
        ).first()
        if row is None:
            return None
        res.repos[int(row.id)] = (row.name, row.owner)
        return int(row.id)

    def _lock_tags(self, conn: sa.Connection, repo_id: int, *conds: Any) -> list[Any]:
        q = sa.select(t.tags).where(t.tags.c.repository_id == repo_id, *conds).order_by(t.tags.c.name_key)
        return list(conn.execute(q.with_for_update()).all())

    def _resolve(self, conn: sa.Connection, targets: list[Target], plan: Plan) -> _Resolved:
        res = _Resolved()
        seen_tags: set[tuple[int, str]] = set()
        for target in targets:
            if target.kind == "trash":
                row = None
                if target.ref.isdigit():
                    row = conn.execute(
                        sa.select(t.trash).where(t.trash.c.id == int(target.ref)).with_for_update()
                    ).first()
                if row is None:
                    plan.not_found.append(str(target))
                else:
                    res.trash_rows.append(row)
                continue
            repo_id = self._repo(conn, target.repository, res)
            if repo_id is None:
                plan.not_found.append(str(target))
                continue
            repo_name = res.repos[repo_id][0]
            if target.kind == "tag":
                rows = self._lock_tags(conn, repo_id, t.tags.c.name_key == target.ref.lower())
            elif target.kind == "manifest":
                member = conn.execute(
                    sa.select(t.repo_manifests.c.manifest_digest).where(
                        t.repo_manifests.c.repository_id == repo_id,
                        t.repo_manifests.c.manifest_digest == target.ref,
                    )
                ).first()
                if member is None:
                    plan.not_found.append(str(target))
                    continue
                rows = self._lock_tags(conn, repo_id, t.tags.c.manifest_digest == target.ref)
                res.memberships.append((repo_id, target.ref))
            else:
                rows = self._lock_tags(conn, repo_id)
                for m in conn.execute(
                    sa.select(t.repo_manifests.c.manifest_digest).where(
                        t.repo_manifests.c.repository_id == repo_id
                    )
                ):
                    res.memberships.append((repo_id, m.manifest_digest))
                if not rows and not res.memberships:
                    plan.not_found.append(str(target))
                    continue
            if target.kind == "tag" and not rows:
                plan.not_found.append(str(target))
                continue
            for row in rows:
                if (repo_id, row.name_key) in seen_tags:
                    continue
                seen_tags.add((repo_id, row.name_key))
                res.tag_rows.append((repo_id, repo_name, row.name, row.manifest_digest, row))
                res.untag.append((repo_id, row.manifest_digest))
        return res

    def _find_blockers(self, conn: sa.Connection, res: _Resolved, actor: Actor, plan: Plan) -> None:
        for repo_id, (name, owner) in res.repos.items():
            if owner is not None and owner != actor.name and not actor.admin:
                plan.blockers.append(Blocker("permission", name, f"{actor.name} does not own {name}"))
            keys = [("repository", name)]
            keys += [("tag", f"{r[1]}:{r[2]}") for r in res.tag_rows if r[0] == repo_id]
            digests = {r[3] for r in res.tag_rows if r[0] == repo_id} | {
                m for i, m in res.memberships if i == repo_id
            }
            keys += [("manifest", d) for d in sorted(digests)]
            for kind, target in keys:
                for dep in conn.execute(
                    sa.select(t.dependents).where(
                        t.dependents.c.target_kind == kind,
                        sa.func.lower(t.dependents.c.target) == target.lower(),
                    )
                ):
                    plan.blockers.append(Blocker(dep.kind, dep.id, dep.reason))

    # ------------------------------------------------------------------ applying

    def _apply(
        self,
        conn: sa.Connection,
        res: _Resolved,
        actor: Actor,
        plan: Plan,
        ts: float,
        *,
        keep_expiry: bool = False,
    ) -> Released:
        """Remove what `res` names; with the trash on, report what expiring the new entries frees.

        That expiry is simulated in a savepoint, rolled back unless `keep_expiry` (a preview session).
        """
        use_trash = plan.trash
        retention = self.store.settings.trash_retention
        touched: set[str] = set()
        for repo_id, repo_name, tag, digest, row in res.tag_rows:
            conn.execute(
                t.tags.delete().where(t.tags.c.repository_id == repo_id, t.tags.c.name_key == row.name_key)
            )
            plan.models.append(f"{repo_name}:{tag}")
            plan.tags.append(f"{repo_name}:{tag}")
            touched.add(digest)
        new_trash: list[int] = []
        if use_trash:
            trashed = [(r[0], r[1], r[2], r[3], r[4]) for r in res.tag_rows]
            tagged = {(r[0], r[3]) for r in res.tag_rows}
            for repo_id, digest in res.memberships:
                if (repo_id, digest) not in tagged:
                    trashed.append((repo_id, res.repos[repo_id][0], "", digest, None))
            for repo_id, repo_name, tag, digest, row in trashed:
                meta = {}
                if row is not None:
                    meta = {
                        "created_at": row.created_at,
                        "modified_at": row.modified_at,
                        "last_used_at": row.last_used_at,
                    }
                result = conn.execute(
                    t.trash.insert().values(
                        repository=repo_name,
                        tag=tag,
                        manifest_digest=digest,
                        owner=res.repos[repo_id][1],
                        deleted_at=ts,
                        expires_at=ts + retention,
                        actor=actor.name,
                        face=actor.face,
                        meta=json.dumps(meta),
                    )
                )
                pk = result.inserted_primary_key
                assert pk is not None
                new_trash.append(int(pk[0]))
            plan.trash_ids = [] if plan.dry_run else new_trash
        for row in res.trash_rows:
            plan.models.append(
                f"{row.repository}:{row.tag}" if row.tag else f"{row.repository}@{row.manifest_digest}"
            )
            conn.execute(t.trash.delete().where(t.trash.c.id == row.id))
            touched.add(row.manifest_digest)
        touched.update(m for _, m in res.memberships)
        own_blobs = {
            r.blob_digest
            for r in conn.execute(
                sa.select(t.manifest_blobs.c.blob_digest).where(
                    t.manifest_blobs.c.manifest_digest.in_(sorted(touched))
                )
            )
        }
        released = self.store.release(
            conn, untag_memberships=res.untag, memberships=res.memberships, manifests=touched, ts=ts
        )
        if use_trash and new_trash:
            # What the trash entries free when they expire: simulate it and roll it back.
            savepoint = conn.begin_nested()
            conn.execute(t.trash.delete().where(t.trash.c.id.in_(new_trash)))
            later = self.store.release(conn, manifests=touched, ts=ts + retention)
            self._report(conn, plan, later, own_blobs)
            if keep_expiry:
                savepoint.commit()
            else:
                savepoint.rollback()
            plan.reclaimed = "on trash expiry" if later.blobs else "nothing"
        else:
            self._report(conn, plan, released, own_blobs)
            plan.reclaimed = "now" if released.blobs else "nothing"
        return released

    def _report(self, conn: sa.Connection, plan: Plan, rel: Released, own_blobs: set[str]) -> None:
        """Fill in what goes, what it frees, and which shared blobs stay and why."""
        plan.manifests = list(rel.manifests)
        plan.blobs = list(rel.blobs)
        plan.bytes_freed = rel.bytes
        plan.deferred = list(rel.deferred)
        for blob in sorted(own_blobs - set(rel.blobs) - set(rel.deferred)):
            holder = conn.execute(
                sa.select(t.repositories.c.name, t.tags.c.name.label("tag"))
                .select_from(
                    t.manifest_blobs.join(
                        t.tags, t.tags.c.manifest_digest == t.manifest_blobs.c.manifest_digest
                    ).join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
                )
                .where(t.manifest_blobs.c.blob_digest == blob)
                .limit(1)
            ).first()
            size = conn.execute(sa.select(t.blobs.c.size).where(t.blobs.c.digest == blob)).scalar()
            used_by = (
                f"{holder.name}:{holder.tag}" if holder is not None else "another manifest or trash entry"
            )
            plan.kept.append({"digest": blob, "size": int(size or 0), "used_by": used_by})

    def _audit(self, conn: sa.Connection, plan: Plan, action: str, ts: float) -> None:
        outcome = "ok" if plan.ok else ("refused" if plan.blockers else "not_found")
        detail = {
            "models": plan.models,
            "manifests": plan.manifests,
            "blobs": plan.blobs,
            "trash_ids": plan.trash_ids,
            "blockers": [asdict(b) for b in plan.blockers],
            "not_found": plan.not_found,
            "reclaimed": plan.reclaimed,
        }
        conn.execute(
            t.audit.insert().values(
                at=ts,
                actor=plan.actor,
                face=plan.face,
                action=action,
                target=", ".join(plan.targets),
                dry_run=plan.dry_run,
                outcome=outcome,
                bytes_freed=plan.bytes_freed if plan.executed and not plan.trash else 0,
                detail=json.dumps(detail),
            )
        )
