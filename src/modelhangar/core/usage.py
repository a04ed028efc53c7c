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
from modelhangar.core.catalog.db import retrying
from modelhangar.core.planner import read_graph, unique_sizes
from modelhangar.core.store import DELETING, Actor, Store, now

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
        return self.breakdown.get("trash", 0)  # none for who may not see the whole store

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trash_size"] = self.trash_size
        return out


@retrying
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
    with store.catalog.read() as conn:
        g = read_graph(conn)
        clause = None if actor is None else permissions.visible(actor)
        shown_rows = g.tag_rows
        if clause is not None:
            shown_rows = [
                (r[0], r[1], r[2])
                for r in conn.execute(
                    sa.select(t.repositories.c.name, t.tags.c.name, t.tags.c.manifest_digest)
                    .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
                    .where(clause)
                    .order_by(t.repositories.c.name, t.tags.c.name)
                )
            ]
    unique = unique_sizes(g)
    blobs_of, children = g.blobs_of, g.children

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

    def model_size(manifest: str) -> int:
        if manifest not in children:  # an image manifest: its own blobs (the common case, no sets)
            return sum(g.sizes.get(d, 0) for d in blobs_of.get(manifest, ()))
        return sum(g.sizes.get(d, 0) for d in closure({manifest}))

    tagged = {m for _, _, m in g.tag_rows}
    in_models = closure(tagged)
    in_untagged = closure(set(g.members) - tagged) - in_models
    in_trash = closure(g.trashed) - in_models - in_untagged
    held = in_models | in_untagged | in_trash
    breakdown = dict.fromkeys(CATEGORIES, 0)
    waiting_until: dict[str, float] = {}
    ts = now()
    for digest, size, state, touched_at, ever in g.blob_rows:
        if state == DELETING:
            key = "deleting"
        elif digest in in_models:
            key = "models"
        elif digest in in_untagged:
            key = "untagged"
        elif digest in in_trash:
            key = "trash"
        elif digest in g.holders and digest not in held:
            key = "reclaimable"  # named only by manifests nothing holds: the next gc sweeps them
        else:
            until = touched_at + (store.reuse_fuse if ever else store.settings.gc_grace)
            key = "reclaimable" if until <= ts else ("waiting_fuse" if ever else "waiting_grace")
            if key != "reclaimable":
                waiting_until[key] = max(waiting_until.get(key, 0.0), until)
        breakdown[key] += size
    if scan_files and clause is None:  # a restricted actor gets no breakdown: no need to scan
        known = {row[0] for row in g.blob_rows}
        for digest, _mtime, size in store.blobs.iter_blob_sizes():  # sizes from the listing itself
            if digest not in known:
                breakdown["unknown_files"] += size
    if shown_rows is not g.tag_rows:  # no store-wide figures for who may not see the whole store
        breakdown, waiting_until = {}, {}
    page_rows = shown_rows[offset : None if limit is None else offset + limit]
    # Sharers among the models the actor may read only: others' private models are not named.
    sharers = _sharers(shown_rows, page_rows, blobs_of) if with_sharers else {}
    models = []
    for repo, tag, manifest in page_rows:
        size = model_size(manifest)
        alone = unique.get((repo, tag), 0)
        count, first = sharers.get((repo, tag), (0, []))
        models.append(ModelUsage(repo, tag, manifest, size, alone, size - alone, count, first))
    return Usage(
        models=models,
        model_count=len(shown_rows),
        breakdown=breakdown,
        total=sum(breakdown.values()),
        blob_count=len(g.blob_rows),
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
    for repo, tag, manifest in tag_rows:
        for b in blobs_of.get(manifest, ()):
            holders[b].add(f"{repo}:{tag}")
    by_set: dict[frozenset[str], list[str]] = {}
    out: dict[tuple[str, str], tuple[int, list[str]]] = {}
    for repo, tag, manifest in page_rows:
        own = f"{repo}:{tag}"
        shared = frozenset(b for b in blobs_of.get(manifest, ()) if len(holders[b]) > 1)
        if not shared:
            out[(repo, tag)] = (0, [])
            continue
        if shared not in by_set:
            union: set[str] = set()
            for b in shared:
                union |= holders[b]
            by_set[shared] = sorted(union)
        names = by_set[shared]
        first = [n for n in names[: SHARERS_SHOWN + 1] if n != own][:SHARERS_SHOWN]
        out[(repo, tag)] = (len(names) - 1, first)  # the union holds the model itself
    return out
