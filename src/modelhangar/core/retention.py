"""Retention policies: which models `hangar prune` (and the server's schedule) deletes.

A model is pruned when it matches the pattern, meets every age condition given (modified more
than `older_than` ago, not used for `unused_for`), and is not among the `keep_last` most
recently modified tags of its repository. At least one condition is required, so an empty
policy never deletes everything. Deletions go through the planner, one result per model.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass

from modelhangar.core.deletion import ModelDeletion, delete_models
from modelhangar.core.names import InvalidName, parse_name
from modelhangar.core.store import Actor, Store, TagRecord, now


@dataclass(frozen=True)
class RetentionPolicy:
    match: str = "*"
    older_than: float | None = None
    unused_for: float | None = None
    keep_last: int | None = None

    def __post_init__(self) -> None:
        if self.older_than is None and self.unused_for is None and self.keep_last is None:
            raise ValueError("a retention policy needs --older-than, --unused-for or --keep-last")
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


def prune(
    store: Store, policy: RetentionPolicy, actor: Actor, *, dry_run: bool = False, purge: bool = False
) -> list[ModelDeletion]:
    names = select_models(store.list_tags(), policy, now())
    return delete_models(store, names, actor, dry_run=dry_run, purge=purge, action="prune")
