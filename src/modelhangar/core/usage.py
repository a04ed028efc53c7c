"""Disk usage: per model its size and the bytes only it uses (what deleting it frees, by the planner's
own rule), and every byte of the store explained once, so the lines add up to the bytes on disk.

One snapshot of the catalog, a handful of whole-table scans, no per-model query: linear in the store.
Who shares a model's blobs is summarised (a count and the first few names), never listed in full,
since a base layer shared by 10,000 models would make that quadratic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from modelhangar.core import permissions
from modelhangar.core.catalog import schema as t
from modelhangar.core.planner import unique_sizes
from modelhangar.core.store import DELETING, PRESENT, Actor, Store, now

SHARERS_SHOWN = 3
CATEGORIES = {
    "models": "held by tagged models",
    "untagged": "held only by untagged manifests (pullable by digest)",
    "trash": "held only by the trash",
    "waiting_fuse": "unreferenced, reclaimed when the reuse fuse ends",
    "waiting_grace": "uploaded, never named by a manifest, within the orphan grace",
    "reclaimable": "unreferenced, reclaimed by the next gc",
    "deleting": "being deleted",
    "unknown_files": "files the catalog does not know (gc reclaims them)",
}
"""Every byte of the blob store is in exactly one of these (`Usage.breakdown`), in this order."""


@dataclass(frozen=True)
class ModelUsage:
    repository: str
    tag: str
    manifest_digest: str
    size: int
    unique_size: int
    shared_size: int
    shared_with_count: int = 0
    shared_with: list[str] = field(default_factory=list)
    """The first few models sharing a blob with this one (of `shared_with_count`)."""


@dataclass(frozen=True)
class Usage:
    models: list[ModelUsage]
    """One page of models (by repository and tag), per `offset` and `limit`."""
    model_count: int
    breakdown: dict[str, int]
    total: int
    """Bytes of every blob file the store holds: the sum of `breakdown`."""
    blob_count: int
    waiting_until: dict[str, float]
    """For `waiting_fuse` and `waiting_grace`: when the last of those bytes become reclaimable."""

    @property
    def trash_size(self) -> int:
        return self.breakdown["trash"]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trash_size"] = self.trash_size
        return out


def disk_usage(
    store: Store,
    *,
    with_sharers: bool = True,
    offset: int = 0,
    limit: int | None = None,
    scan_files: bool = True,
    actor: Actor | None = None,
) -> Usage:
    """Usage of the whole store, models paginated; `scan_files` also counts files the catalog lacks.

    For an `actor` who is no admin: only the models it may read, and no store-wide breakdown (its
    `breakdown` is empty and `total` 0), since that would tell the sizes of others' private models.
    """
    mb = t.manifest_blobs
    with store.catalog.read() as conn:
        unique = unique_sizes(conn)
        blob_rows = conn.execute(
            sa.select(
                t.blobs.c.digest,
                t.blobs.c.size,
                t.blobs.c.state,
                t.blobs.c.touched_at,
                t.blobs.c.ever_referenced,
            )
        ).all()
        blobs_of: dict[str, list[str]] = defaultdict(list)
        for r in conn.execute(sa.select(mb.c.manifest_digest, mb.c.blob_digest)):
            blobs_of[r.manifest_digest].append(r.blob_digest)
        children: dict[str, list[str]] = defaultdict(list)
        for r in conn.execute(sa.select(t.manifest_children)):
            children[r.parent_digest].append(r.child_digest)
        tag_rows = conn.execute(
            sa.select(t.repositories.c.name, t.tags.c.name.label("tag"), t.tags.c.manifest_digest)
            .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
            .order_by(t.repositories.c.name, t.tags.c.name)
        ).all()
        clause = None if actor is None else permissions.visible(actor)
        shown_rows = tag_rows
        if clause is not None:
            shown_rows = conn.execute(
                sa.select(t.repositories.c.name, t.tags.c.name.label("tag"), t.tags.c.manifest_digest)
                .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
                .where(clause)
                .order_by(t.repositories.c.name, t.tags.c.name)
            ).all()
        members = {r.manifest_digest for r in conn.execute(sa.select(t.repo_manifests.c.manifest_digest))}
        trashed = {r.manifest_digest for r in conn.execute(sa.select(t.trash.c.manifest_digest))}
    sizes = {r.digest: int(r.size) for r in blob_rows if r.state == PRESENT}

    def closure(roots: set[str]) -> set[str]:
        """Blobs of `roots` and of the manifests they index."""
        seen, stack, out = set(roots), list(roots), set[str]()
        while stack:
            m = stack.pop()
            out.update(blobs_of.get(m, ()))
            for c in children.get(m, ()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return out

    tagged = {r.manifest_digest for r in tag_rows}
    in_models = closure(tagged)
    in_untagged = closure(members - tagged) - in_models
    in_trash = closure(trashed) - in_models - in_untagged
    held = in_models | in_untagged | in_trash
    referenced = {b for bl in blobs_of.values() for b in bl}
    breakdown = dict.fromkeys(CATEGORIES, 0)
    waiting_until: dict[str, float] = {}
    ts = now()
    for b in blob_rows:
        size = int(b.size)
        if b.state == DELETING:
            key = "deleting"
        elif b.digest in in_models:
            key = "models"
        elif b.digest in in_untagged:
            key = "untagged"
        elif b.digest in in_trash:
            key = "trash"
        elif b.digest in referenced and b.digest not in held:
            key = "reclaimable"  # named only by manifests nothing holds: the next gc sweeps them
        else:
            wait = store.reuse_fuse if b.ever_referenced else store.settings.gc_grace
            until = float(b.touched_at) + wait
            key = "reclaimable" if until <= ts else ("waiting_fuse" if b.ever_referenced else "waiting_grace")
            if key != "reclaimable":
                waiting_until[key] = max(waiting_until.get(key, 0.0), until)
        breakdown[key] += size
    if scan_files:
        known = {r.digest for r in blob_rows}
        for digest, _mtime in store.blobs.iter_blobs():
            if digest not in known:
                breakdown["unknown_files"] += store.blobs.size(digest) or 0
    if shown_rows is not tag_rows:  # no store-wide figures for who may not see the whole store
        breakdown, waiting_until = {}, {}
    page_rows = shown_rows[offset : None if limit is None else offset + limit]
    sharers = _sharers(tag_rows, page_rows, blobs_of) if with_sharers else {}
    models = []
    for p in page_rows:
        size = sum(sizes.get(d, 0) for d in closure({p.manifest_digest}))
        alone = unique.get((p.name, p.tag), 0)
        count, first = sharers.get((p.name, p.tag), (0, []))
        models.append(ModelUsage(p.name, p.tag, p.manifest_digest, size, alone, size - alone, count, first))
    return Usage(
        models=models,
        model_count=len(shown_rows),
        breakdown=breakdown,
        total=sum(breakdown.values()),
        blob_count=len(blob_rows),
        waiting_until=waiting_until,
    )


def _sharers(
    tag_rows: Sequence[Any],
    page_rows: Sequence[Any],
    blobs_of: dict[str, list[str]],
) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """For each model of the page: how many other models share one of its blobs, and the first few.

    Models whose manifests name the same set of blobs have the same sharers, so each distinct set is
    unioned once: a base layer shared by every model costs one pass, not one per model.
    """
    holders: dict[str, set[str]] = defaultdict(set)
    for r in tag_rows:
        for b in blobs_of.get(r.manifest_digest, ()):
            holders[b].add(f"{r.name}:{r.tag}")
    by_set: dict[frozenset[str], list[str]] = {}
    out: dict[tuple[str, str], tuple[int, list[str]]] = {}
    for r in page_rows:
        own = f"{r.name}:{r.tag}"
        shared = frozenset(b for b in blobs_of.get(r.manifest_digest, ()) if len(holders[b]) > 1)
        if not shared:
            out[(r.name, r.tag)] = (0, [])
            continue
        if shared not in by_set:
            union: set[str] = set()
            for b in shared:
                union |= holders[b]
            by_set[shared] = sorted(union)
        names = by_set[shared]
        first = [n for n in names[: SHARERS_SHOWN + 1] if n != own][:SHARERS_SHOWN]
        out[(r.name, r.tag)] = (len(names) - (1 if own in names else 0), first)
    return out
