"""Retention policies: which models `hangar prune` (and the server's schedule) deletes.

A model is pruned when it matches the pattern, meets every age condition given (modified more
than `older_than` ago, not used for `unused_for`), and is not among the `keep_last` most
recently modified tags of its repository. `untagged_for` prunes manifests that have had no tag in
their repository for that long (a registry's untagged manifests, pullable only by digest) in the
repositories the pattern matches. At least one condition is required, so an empty policy never
deletes everything. Deletions go through the planner, one result per model or manifest.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.deletion import ModelDeletion, delete_targets, model_target
from modelhangar.core.names import InvalidName, display_repository, parse_name
from modelhangar.core.planner import Target
from modelhangar.core.store import Actor, Store, TagRecord, now


@dataclass(frozen=True)
class RetentionPolicy:
    match: str = "*"
    older_than: float | None = None
    unused_for: float | None = None
    keep_last: int | None = None
    untagged_for: float | None = None

    @property
    def selects_tags(self) -> bool:
        return self.older_than is not None or self.unused_for is not None or self.keep_last is not None

    def __post_init__(self) -> None:
        if not self.selects_tags and self.untagged_for is None:
            raise ValueError(
                "a retention policy needs --older-than, --unused-for, --keep-last or --untagged-for"
            )
        if self.keep_last is not None and self.keep_last < 0:
            raise ValueError("keep-last must be 0 or more")


def policy_from_config(doc: dict[str, object]) -> RetentionPolicy:
    """A policy from a `[[retention]]` table of the config file."""
    from modelhangar.core.config import parse_duration

    def dur(key: str) -> float | None:
        value = doc.get(key)
        return None if value is None else parse_duration(str(value))

    keep = doc.get("keep_last")
    return RetentionPolicy(
        match=str(doc.get("match", "*")),
        older_than=dur("older_than"),
        unused_for=dur("unused_for"),
        keep_last=int(keep) if isinstance(keep, int | str) else None,
        untagged_for=dur("untagged_for"),
    )


def _display(r: TagRecord) -> str:
    try:
        return parse_name(f"{r.repository}:{r.tag}").display_shortest()
    except InvalidName:
        return f"{r.repository}:{r.tag}"


def select_models(records: list[TagRecord], policy: RetentionPolicy, at: float) -> list[str]:
    """Display names of the models the policy would prune, oldest first."""
    kept: set[tuple[str, str]] = set()
    if policy.keep_last is not None:
        by_repo: dict[str, list[TagRecord]] = defaultdict(list)
        for r in records:
            by_repo[r.repository].append(r)
        for tags in by_repo.values():
            tags.sort(key=lambda r: r.modified_at, reverse=True)
            kept.update((r.repository, r.tag) for r in tags[: policy.keep_last])
    chosen = []
    for r in sorted(records, key=lambda r: r.modified_at):
        name = _display(r)
        full = f"{r.repository}:{r.tag}"
        if not (fnmatch.fnmatchcase(name, policy.match) or fnmatch.fnmatchcase(full, policy.match)):
            continue
        if (r.repository, r.tag) in kept:
            continue
        if policy.older_than is not None and r.modified_at > at - policy.older_than:
            continue
        if policy.unused_for is not None and r.last_used_at > at - policy.unused_for:
            continue
        chosen.append(name)
    return chosen


def select_untagged(
    store: Store, policy: RetentionPolicy, at: float, actor: Actor | None = None
) -> list[tuple[str, Target]]:
    """(label, target) of each manifest untagged for `policy.untagged_for` in a matching repository
    (that `actor`, if given, may delete)."""
    if policy.untagged_for is None:
        return []
    rm = t.repo_manifests
    q = (
        sa.select(t.repositories.c.name, t.repositories.c.owner, rm.c.manifest_digest)
        .join(t.repositories, t.repositories.c.id == rm.c.repository_id)
        .where(rm.c.untagged_at.is_not(None), rm.c.untagged_at <= at - policy.untagged_for)
        .order_by(rm.c.untagged_at)
    )
    with store.catalog.read() as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        if actor is not None and not actor.acts_for(r.owner):
            continue
        short = display_repository(r.name)
        if fnmatch.fnmatchcase(short, policy.match) or fnmatch.fnmatchcase(r.name, policy.match):
            out.append((f"{short}@{r.manifest_digest}", Target("manifest", r.name, r.manifest_digest)))
    return out


def prune(
    store: Store, policy: RetentionPolicy, actor: Actor, *, dry_run: bool = False, purge: bool = False
) -> list[ModelDeletion]:
    """Delete what the policy selects among the models `actor` may delete (all, for an admin)."""
    at = now()
    labeled: list[tuple[str, Target | str]] = []
    if policy.selects_tags:
        mine = [r for r in store.list_tags(actor=actor) if actor.acts_for(r.owner)]
        for name in select_models(mine, policy, at):
            try:
                labeled.append((name, model_target(name)))
            except InvalidName as e:
                labeled.append((name, f'invalid model name "{name}": {e.reason}'))
    labeled += select_untagged(store, policy, at, actor)
    return delete_targets(store, labeled, actor, dry_run=dry_run, purge=purge, action="prune")
