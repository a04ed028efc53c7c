"""The one deletion planner every face, the CLI, retention, GC and overwrites delete through.

`Planner.delete` resolves what to delete, finds what blocks it (missing permission, dependents
of any kind), and applies the deletion inside one catalog transaction: tags go, memberships
go, and manifests and blobs that nothing holds any longer go too (or, with the trash on, the
trash entry keeps them until it expires). A dry run runs exactly the same code and rolls the
transaction back, so a preview never disagrees with what a real delete would have done.

Moving a tag onto another manifest removes the version it pointed at just as a delete does
(`Planner.overwrite_in`, called by the store in the transaction that moves the tag): the same
blockers refuse it, the old version goes to the trash (listed with what replaced it) or is purged,
and the overwrite is audited.

What a plan frees is reported in time (README, "Safety rules" 2): `bytes_now` go at once; `later`
says which bytes go when: blobs a writer used within the reuse fuse are reclaimed by the server's
timer when the fuse ends (`core/reclaim.py`), a trash entry's blobs when it expires.
`unique_sizes` is the same rule in closed form, for listings: what deleting each tag alone frees.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from modelhangar.core import dependents, model_rules, permissions, repo_figures, shared_settings
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.errors import Refused
from modelhangar.core.store import FUSE_REASON, Actor, Released, Store, now

TargetKind = Literal["tag", "untag", "manifest", "repository", "trash"]
TRASH_REASON = "kept in the trash"


@dataclass(frozen=True)
class Target:
    """What to delete: a tag (and the manifest it alone holds in its repository), only a tag (`untag`:
    the manifest stays, untagged), a manifest of a repository, a whole repository, or a trash entry."""

    kind: TargetKind
    repository: str = ""
    ref: str = ""

    def __str__(self) -> str:
        if self.kind in ("tag", "untag"):
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
    """What a deletion removes, frees and is blocked by; also what it did, once executed.

    `blobs` and `bytes_freed` are everything the deletion frees, whenever; `bytes_now` goes at once,
    and each entry of `later` (`bytes`, `at` in POSIX seconds, `reason`, `blobs`) goes at its time.
    """

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
    bytes_now: int = 0
    later: list[dict[str, Any]] = field(default_factory=list)
    reclaimed: str = "nothing"
    blockers: list[Blocker] = field(default_factory=list)
    warnings: list[Blocker] = field(default_factory=list)
    """Users of what goes that do not refuse it (safe delete off, say) but will break: shown, not enforced."""
    kept: list[dict[str, Any]] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    trash_ids: list[int] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)
    replaced_by: str | None = None
    executed: bool = False
    token_name: str | None = None

    @property
    def ok(self) -> bool:
        return not self.blockers and not self.not_found

    @property
    def bytes_later(self) -> int:
        return sum(int(x["bytes"]) for x in self.later)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bytes_later"] = self.bytes_later
        return out


@dataclass
class _Resolved:
    """Rows a plan touches, locked for the rest of the transaction."""

    tag_rows: list[tuple[int, str, str, str, Any]] = field(
        default_factory=list
    )  # repo_id, repo, tag, digest, row
    memberships: list[tuple[int, str]] = field(default_factory=list)
    untag: list[tuple[int, str]] = field(default_factory=list)
    keep_untagged: bool = False
    whole_repos: set[int] = field(default_factory=set)
    visibility: dict[int, str] = field(default_factory=dict)
    rows: dict[int, Any] = field(default_factory=dict)
    trash_rows: list[Any] = field(default_factory=list)
    repos: dict[int, tuple[str, str | None]] = field(default_factory=dict)


def may_delete(actor: Actor, owner: str | None) -> bool:
    """The one ownership rule for removing a model: `core/permissions.py` (README, "Safety rules")."""
    return permissions.may_write(actor, owner)


def dependents_of(conn: sa.Connection, target_kind: str, target: str) -> list[Blocker]:
    """What uses `target` and refuses its removal now (see `core/dependents.py` for the policies)."""
    return _weigh(conn, target_kind, target)[0]


def _weigh(conn: sa.Connection, target_kind: str, target: str) -> tuple[list[Blocker], list[Blocker]]:
    """(blockers, warnings): the users of `target` that refuse its removal, and those it would break."""
    blocking: list[Blocker] = []
    warning: list[Blocker] = []
    for d in dependents.of_target(conn, target_kind, target):
        policy = d.policy or "block"
        blocks = policy == "block" or (
            policy.startswith("setting:") and shared_settings.is_true(conn, policy.removeprefix("setting:"))
        )
        (blocking if blocks else warning).append(Blocker(d.kind, d.id, d.reason))
    return blocking, warning


class Planner:
    """Plans and carries out deletions over a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _new_plan(self, targets: list[Target], actor: Actor, *, dry_run: bool, purge: bool) -> Plan:
        return Plan(
            targets=[str(x) for x in targets],
            actor=actor.name,
            face=actor.face,
            token_name=actor.token,
            dry_run=dry_run,
            trash=not purge and self.store.settings.trash_retention > 0,
        )

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
        return self._delete(targets, actor, purge=purge, action=action)

    @retrying
    def _delete(self, targets: list[Target], actor: Actor, *, purge: bool, action: str) -> Plan:
        plan = self._new_plan(targets, actor, dry_run=False, purge=purge)
        released = Released()
        with self.store.catalog.transaction() as (conn, trans):
            ts = now()
            res = self._resolve(conn, targets, plan, actor)
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
            res = self._resolve(conn, targets, plan, actor)
            self._find_blockers(conn, res, actor, plan)
            if plan.ok:
                self._apply(conn, res, actor, plan, ts, keep_expiry=True)
            else:  # show what it would remove, but let later groups not count on it
                savepoint = conn.begin_nested()
                self._apply(conn, res, actor, plan, ts)
                savepoint.rollback()
        return plans

    # ------------------------------------------------------------------ overwrites

    def overwrite_in(
        self,
        conn: sa.Connection,
        actor: Actor,
        *,
        repo_id: int,
        old: Any,
        new_digest: str,
        ts: float,
        keep_untagged: bool,
    ) -> Released:
        """The version a moved tag leaves, removed as a delete removes it (inside the store's transaction).

        `old` is the tag's row before the move (the tag already points at `new_digest`). If no other tag
        of the repository points at the old manifest, it leaves the repository: to the trash (with
        `replaced_by`) or purged, unless `keep_untagged` (the registry's rule: it stays, untagged, until
        deleted by digest or an untagged-retention rule). Blockers raise Refused; the caller audits it.
        """
        repo = conn.execute(
            sa.select(t.repositories.c.name, t.repositories.c.owner, t.repositories.c.visibility).where(
                t.repositories.c.id == repo_id
            )
        ).one()
        target = Target("tag", repo.name, old.name)
        plan = self._new_plan([target], actor, dry_run=False, purge=False)
        plan.replaced_by = new_digest
        plan.models = [f"{repo.name}:{old.name}"]
        plan.tags = list(plan.models)
        digest = old.manifest_digest
        still_tagged = self._tagged_in(conn, repo_id, digest)
        leaves = not still_tagged and not keep_untagged
        if not may_delete(actor, repo.owner):
            plan.blockers.append(Blocker("permission", repo.name, f"{actor.name} does not own {repo.name}"))
        plan.blockers += dependents_of(conn, "tag", str(target))
        if leaves:
            plan.blockers += dependents_of(conn, "manifest", digest)
        if plan.blockers:
            raise Refused(plan, _refusal(plan, "overwrite"))
        res = _Resolved(
            repos={repo_id: (repo.name, repo.owner)},
            visibility={repo_id: repo.visibility},
            keep_untagged=not leaves,
        )
        if not still_tagged:
            if leaves:
                res.memberships.append((repo_id, digest))
                res.tag_rows.append((repo_id, repo.name, old.name, digest, old))
            else:
                res.untag.append((repo_id, digest))
        released = self._remove(conn, res, actor, plan, ts, replaced_by=new_digest, report=False)
        plan.executed = True
        self._audit(conn, plan, "overwrite", ts)
        return released

    def audit_refusal(self, plan: Plan, action: str) -> None:
        """Record a refused overwrite (its own transaction rolled back)."""
        with self.store.catalog.write() as conn:
            self._audit(conn, plan, action, now())

    # ------------------------------------------------------------------ resolving

    def _repo(self, conn: sa.Connection, name: str, res: _Resolved, actor: Actor) -> int | None:
        row = conn.execute(
            sa.select(t.repositories)
            .where(t.repositories.c.name_key == name.lower())
            .with_for_update()  # repository, then tags, then manifests, then blobs: as every writer
        ).first()
        if row is None or not permissions.may_read(actor, row.owner, row.visibility):
            return None  # a private model of another account does not exist for this actor
        res.repos[int(row.id)] = (row.name, row.owner)
        res.visibility[int(row.id)] = row.visibility
        res.rows[int(row.id)] = row
        return int(row.id)

    def _lock_tags(self, conn: sa.Connection, repo_id: int, *conds: Any) -> list[Any]:
        q = sa.select(t.tags).where(t.tags.c.repository_id == repo_id, *conds).order_by(t.tags.c.name_key)
        return list(conn.execute(q.with_for_update()).all())

    @staticmethod
    def _tagged_in(conn: sa.Connection, repo_id: int, digest: str) -> bool:
        q = sa.select(sa.literal(1)).where(
            t.tags.c.repository_id == repo_id, t.tags.c.manifest_digest == digest
        )
        return conn.execute(q.limit(1)).first() is not None

    def _resolve(self, conn: sa.Connection, targets: list[Target], plan: Plan, actor: Actor) -> _Resolved:
        res = _Resolved()
        seen_tags: set[tuple[int, str]] = set()
        for target in targets:
            if target.kind == "trash":
                row = None
                if target.ref.isdigit():
                    row = conn.execute(
                        sa.select(t.trash).where(t.trash.c.id == int(target.ref)).with_for_update()
                    ).first()
                if row is None or not actor.acts_for(row.owner):
                    plan.not_found.append(str(target))  # another account's trash entry is not there
                else:
                    res.trash_rows.append(row)
                continue
            repo_id = self._repo(conn, target.repository, res, actor)
            if repo_id is None:
                plan.not_found.append(str(target))
                continue
            repo_name = res.repos[repo_id][0]
            if target.kind in ("tag", "untag"):
                rows = self._lock_tags(conn, repo_id, t.tags.c.name_key == target.ref.lower())
                res.keep_untagged = res.keep_untagged or target.kind == "untag"
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
                res.whole_repos.add(repo_id)
                for m in conn.execute(
                    sa.select(t.repo_manifests.c.manifest_digest).where(
                        t.repo_manifests.c.repository_id == repo_id
                    )
                ):
                    res.memberships.append((repo_id, m.manifest_digest))
                if not rows and not res.memberships and res.rows[repo_id].kind is None:
                    plan.not_found.append(str(target))  # a face's model object exists while empty
                    continue
            if target.kind in ("tag", "untag") and not rows:
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
            if not may_delete(actor, owner):
                plan.blockers.append(Blocker("permission", name, f"{actor.name} does not own {name}"))
            keys = [] if res.keep_untagged else [("repository", name)]
            keys += [("tag", f"{r[1]}:{r[2]}") for r in res.tag_rows if r[0] == repo_id]
            digests = set() if res.keep_untagged else {r[3] for r in res.tag_rows if r[0] == repo_id}
            digests |= {m for i, m in res.memberships if i == repo_id}
            keys += [("manifest", d) for d in sorted(digests)]
            for kind, target in keys:
                blocking, warning = _weigh(conn, kind, target)
                plan.blockers += blocking
                plan.warnings += warning
            if repo_id in res.rows:
                removal = model_rules.Removal(
                    res.rows[repo_id],
                    repo_id in res.whole_repos,
                    frozenset(digests),
                    actor,
                    frozenset(r[2] for r in res.tag_rows if r[0] == repo_id),
                )
                plan.blockers += [Blocker(*b) for b in model_rules.blockers(conn, removal)]

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
        for repo_id, _repo_name, _tag, _digest, row in res.tag_rows:
            conn.execute(
                t.tags.delete().where(t.tags.c.repository_id == repo_id, t.tags.c.name_key == row.name_key)
            )
        if res.whole_repos:  # its blob links go too: nothing of a deleted repository stays readable in it
            conn.execute(
                t.repo_blobs.delete().where(t.repo_blobs.c.repository_id.in_(sorted(res.whole_repos)))
            )
        released = self._remove(conn, res, actor, plan, ts, keep_expiry=keep_expiry)
        repo_figures.refresh(conn, {r[0] for r in res.tag_rows} | set(res.whole_repos))
        for repo_id in sorted(res.whole_repos):  # a face's model object goes with the whole repository
            row = res.rows.get(repo_id)
            if row is not None and row.kind is not None:
                conn.execute(t.repositories.delete().where(t.repositories.c.id == repo_id))
                model_rules.removed(conn, row)
        return released

    def _remove(
        self,
        conn: sa.Connection,
        res: _Resolved,
        actor: Actor,
        plan: Plan,
        ts: float,
        *,
        replaced_by: str | None = None,
        keep_expiry: bool = False,
        report: bool = True,
    ) -> Released:
        """Everything after the tags are gone (or moved): trash entries, memberships, what nothing holds."""
        use_trash = plan.trash
        retention = self.store.settings.trash_retention
        touched: set[str] = set()
        for _repo_id, repo_name, tag, digest, _row in res.tag_rows:
            if f"{repo_name}:{tag}" not in plan.models:
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
            if res.keep_untagged:
                trashed = [x for x in trashed if (x[0], x[3]) in set(res.memberships)]
            for repo_id, repo_name, tag, digest, row in trashed:
                meta: dict[str, Any] = {"visibility": res.visibility.get(repo_id)}
                if row is not None:
                    meta |= {
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
                        replaced_by=replaced_by,
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
        own_blobs = self._blobs_of(conn, touched) if report else set()
        released = self.store.release(
            conn,
            untag_memberships=[] if res.keep_untagged else res.untag,
            keep_untagged=res.untag if res.keep_untagged else (),
            memberships=res.memberships,
            manifests=touched if not res.keep_untagged else [m for _, m in res.memberships],
            ts=ts,
        )
        plan.untagged = released.untagged
        if use_trash and new_trash and report:
            # What the trash entries free when they expire: simulate it and roll it back.
            savepoint = conn.begin_nested()
            conn.execute(t.trash.delete().where(t.trash.c.id.in_(new_trash)))
            expiry = ts + retention
            later = self.store.release(conn, manifests=touched, ts=expiry, schedule=False)
            self._report(conn, plan, Released(), own_blobs - set(later.blobs) - set(later.deferred), ts)
            self._report_later(conn, plan, later, expiry, TRASH_REASON)
            if keep_expiry:
                savepoint.commit()
            else:
                savepoint.rollback()
            plan.reclaimed = "on trash expiry" if later.blobs or later.deferred else "nothing"
        else:
            if report:
                self._report(conn, plan, released, own_blobs, ts)
            else:
                plan.manifests, plan.blobs = list(released.manifests), list(released.blobs)
                plan.bytes_now = plan.bytes_freed = released.bytes
            plan.reclaimed = (
                ("now and later" if released.deferred else "now")
                if released.blobs
                else ("later" if released.deferred else "nothing")
            )
        return released

    @staticmethod
    def _blobs_of(conn: sa.Connection, manifests: Iterable[str]) -> set[str]:
        q = sa.select(t.manifest_blobs.c.blob_digest).where(
            t.manifest_blobs.c.manifest_digest.in_(sorted(set(manifests)))
        )
        return {r.blob_digest for r in conn.execute(q)}

    def _report(self, conn: sa.Connection, plan: Plan, rel: Released, own_blobs: set[str], ts: float) -> None:
        """Fill in what goes now, what goes when the fuse ends, and which shared blobs stay and why."""
        plan.manifests = list(rel.manifests)
        plan.blobs = list(rel.blobs)
        plan.bytes_now = rel.bytes
        plan.deferred = list(rel.deferred)
        plan.bytes_freed = rel.bytes
        self._report_later(conn, plan, rel, None, None)
        for blob in sorted(own_blobs - set(rel.blobs) - set(rel.deferred)):
            plan.kept.append({"digest": blob, "size": self._size(conn, blob), "used_by": _holder(conn, blob)})

    def _report_later(
        self, conn: sa.Connection, plan: Plan, rel: Released, at: float | None, reason: str | None
    ) -> None:
        """Add what `rel` frees at `at` (a trash expiry), or, with `at` None, its blobs left to the fuse."""
        if at is not None and reason is not None and rel.blobs:
            plan.later.append({"bytes": rel.bytes, "at": at, "reason": reason, "blobs": list(rel.blobs)})
            plan.blobs += [b for b in rel.blobs if b not in plan.blobs]
            plan.bytes_freed += rel.bytes
            plan.manifests += [m for m in rel.manifests if m not in plan.manifests]
        groups: dict[str, list[str]] = {}
        for d in rel.deferred:
            groups.setdefault(rel.why.get(d, FUSE_REASON), []).append(d)
        for why, digests in groups.items():
            size = sum(rel.sizes.get(d, 0) for d in digests)
            due = max(rel.due.get(d, 0.0) for d in digests)
            plan.later.append({"bytes": size, "at": due, "reason": why, "blobs": digests})
            plan.blobs += [d for d in digests if d not in plan.blobs]
            plan.bytes_freed += size
            if at is not None:
                plan.deferred += [d for d in digests if d not in plan.deferred]

    @staticmethod
    def _size(conn: sa.Connection, blob: str) -> int:
        return int(conn.execute(sa.select(t.blobs.c.size).where(t.blobs.c.digest == blob)).scalar() or 0)

    def _audit(self, conn: sa.Connection, plan: Plan, action: str, ts: float) -> None:
        outcome = "ok" if plan.ok else ("refused" if plan.blockers else "not_found")
        detail = {
            "models": plan.models,
            "manifests": plan.manifests,
            "blobs": plan.blobs,
            "trash_ids": plan.trash_ids,
            "blockers": [asdict(b) for b in plan.blockers],
            "warnings": [asdict(b) for b in plan.warnings],
            "not_found": plan.not_found,
            "reclaimed": plan.reclaimed,
            "later": [{k: v for k, v in x.items() if k != "blobs"} for x in plan.later],
        }
        if plan.replaced_by:
            detail["replaced_by"] = plan.replaced_by
        if plan.untagged:
            detail["untagged"] = plan.untagged
        conn.execute(
            t.audit.insert().values(
                at=ts,
                actor=plan.actor,
                face=plan.face,
                action=action,
                target=", ".join(plan.targets),
                dry_run=plan.dry_run,
                outcome=outcome,
                bytes_freed=plan.bytes_now if plan.executed else 0,
                detail=json.dumps(detail),
                token_name=plan.token_name,
            )
        )


def _holder(conn: sa.Connection, blob: str) -> str:
    """Who keeps a shared blob: a tag, else an untagged manifest's repository, else a trash entry."""
    mb = t.manifest_blobs
    tag = conn.execute(
        sa.select(t.repositories.c.name, t.tags.c.name.label("tag"))
        .select_from(
            mb.join(t.tags, t.tags.c.manifest_digest == mb.c.manifest_digest).join(
                t.repositories, t.repositories.c.id == t.tags.c.repository_id
            )
        )
        .where(mb.c.blob_digest == blob)
        .limit(1)
    ).first()
    if tag is not None:
        return f"{tag.name}:{tag.tag}"
    member = conn.execute(
        sa.select(t.repositories.c.name, mb.c.manifest_digest)
        .select_from(
            mb.join(t.repo_manifests, t.repo_manifests.c.manifest_digest == mb.c.manifest_digest).join(
                t.repositories, t.repositories.c.id == t.repo_manifests.c.repository_id
            )
        )
        .where(mb.c.blob_digest == blob)
        .limit(1)
    ).first()
    if member is not None:
        return f"{member.name}@{member.manifest_digest}"
    entry = conn.execute(
        sa.select(t.trash.c.repository, t.trash.c.tag)
        .select_from(mb.join(t.trash, t.trash.c.manifest_digest == mb.c.manifest_digest))
        .where(mb.c.blob_digest == blob)
        .limit(1)
    ).first()
    if entry is not None:
        return f"the trash entry of {entry.repository}:{entry.tag}" if entry.tag else "a trash entry"
    return "another manifest"


def _refusal(plan: Plan, verb: str) -> str:
    reasons = "; ".join(f"{b.kind} {b.id}: {b.reason}" for b in plan.blockers)
    return f"refused to {verb} {', '.join(plan.models)}: {reasons}"


@dataclass
class Graph:
    """The store's reference graph, read in one snapshot: who holds what (for `unique_sizes`, `du`)."""

    tag_rows: list[tuple[str, str, str]]
    """(repository, tag, manifest digest) of every tag, by repository and tag."""
    members: dict[str, int]
    """Manifest -> how many repositories it is a member of."""
    trashed: set[str]
    parents: dict[str, int]
    children: dict[str, list[str]]
    holders: dict[str, int]
    """Blob -> how many manifests name it."""
    blobs_of: dict[str, list[str]]
    blob_rows: list[tuple[str, int, str, float, bool]]
    """(digest, size, state, touched_at, ever_referenced) of every blob row."""
    sizes: dict[str, int]
    """Present blobs' sizes."""


def read_graph(conn: sa.Connection) -> Graph:
    """One pass over each table of the reference graph (plain tuples: listings hold 100,000 models)."""
    tag_rows = [
        (r[0], r[1], r[2])
        for r in conn.execute(
            sa.select(t.repositories.c.name, t.tags.c.name, t.tags.c.manifest_digest)
            .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
            .order_by(t.repositories.c.name, t.tags.c.name)
        )
    ]
    members: dict[str, int] = {}
    for (m,) in conn.execute(sa.select(t.repo_manifests.c.manifest_digest)):
        members[m] = members.get(m, 0) + 1
    trashed = {m for (m,) in conn.execute(sa.select(t.trash.c.manifest_digest))}
    parents: dict[str, int] = {}
    children: dict[str, list[str]] = {}
    mc = t.manifest_children
    for parent, child in conn.execute(sa.select(mc.c.parent_digest, mc.c.child_digest)):
        parents[child] = parents.get(child, 0) + 1
        children.setdefault(parent, []).append(child)
    holders: dict[str, int] = {}
    blobs_of: dict[str, list[str]] = {}
    mb = t.manifest_blobs
    for m, b in conn.execute(sa.select(mb.c.manifest_digest, mb.c.blob_digest)):
        holders[b] = holders.get(b, 0) + 1
        blobs_of.setdefault(m, []).append(b)
    b = t.blobs.c
    blob_rows = [
        (d, int(size), state, float(touched), bool(ever))
        for d, size, state, touched, ever in conn.execute(
            sa.select(b.digest, b.size, b.state, b.touched_at, b.ever_referenced)
        )
    ]
    sizes = {d: size for d, size, state, _, _ in blob_rows if state == "present"}
    return Graph(tag_rows, members, trashed, parents, children, holders, blobs_of, blob_rows, sizes)


def unique_sizes(source: sa.Connection | Graph) -> dict[tuple[str, str], int]:
    """{(repository, tag): bytes deleting that tag alone (purged) would free}, for the whole store.

    The closed form of `Store.release` for one tag (tests check it against the planner's previews):
    the tag's manifest leaves only if no other tag, repository membership, trash entry or parent index
    holds it; then each of its blobs goes if no other manifest names it (an index's children likewise).
    One pass over tags, memberships and references: linear in the store, never quadratic.
    """
    g = source if isinstance(source, Graph) else read_graph(source)
    tags_per: dict[str, int] = {}
    for _, _, m in g.tag_rows:
        tags_per[m] = tags_per.get(m, 0) + 1

    def freed(manifest: str) -> int:
        gone: dict[str, int] = {}  # blob -> references dropped
        stack, dropped = [manifest], {manifest}
        while stack:
            m = stack.pop()
            for blob in g.blobs_of.get(m, ()):
                gone[blob] = gone.get(blob, 0) + 1
            for c in g.children.get(m, ()):
                other = g.members.get(c, 0) or c in g.trashed or g.parents.get(c, 0) > 1
                if c not in dropped and not other:
                    dropped.add(c)
                    stack.append(c)
        return sum(g.sizes.get(blob, 0) for blob, n in gone.items() if g.holders.get(blob, 0) == n)

    out: dict[tuple[str, str], int] = {}
    cache: dict[str, int] = {}
    for repo, tag, m in g.tag_rows:
        alone = (
            tags_per.get(m, 0) == 1
            and g.members.get(m, 0) <= 1
            and m not in g.trashed
            and not g.parents.get(m, 0)
        )
        if not alone:
            out[(repo, tag)] = 0
            continue
        if m not in cache:
            cache[m] = freed(m)
        out[(repo, tag)] = cache[m]
    return out
