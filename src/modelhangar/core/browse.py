"""Browsing the store: a page of models and one model in detail, as a person looks at them (the web UI).

Read-only. A page costs a few queries over that page's repositories, never a pass over the store
(README, "Safety rules" 4 keeps deletes in proportion to a model; listings here keep to the page):
counting and ordering run in the database, then sizes, the bytes only each model uses, tags and last
use are read for the page's repositories alone.

`freed` is the planner's rule for deleting a whole repository (purged), in closed form, as
`planner.unique_sizes` is for one tag: a manifest leaves when no other repository, trash entry or
parent index outside the repository holds it; a blob goes when every manifest naming it leaves.
Tests check it against the planner's previews.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from modelhangar.core import dependents, permissions
from modelhangar.core.actors import Actor
from modelhangar.core.catalog import schema as t
from modelhangar.core.names import display_repository
from modelhangar.core.store import Store

Sort = Literal["name", "size", "age"]
SORTS: tuple[Sort, ...] = ("name", "size", "age")
SHARERS_SHOWN = 5


@dataclass(frozen=True)
class ModelRow:
    repository: str
    name: str
    """Shortest display form (`tiny`, `alice/model`)."""
    owner: str | None
    visibility: str
    kind: str | None
    size: int
    """Bytes of the distinct blobs its versions name."""
    freed: int
    """Bytes deleting the whole model would free (once its trash entries expire)."""
    tags: int
    versions: int
    last_used: float | None
    modified: float | None


@dataclass(frozen=True)
class ModelPage:
    rows: list[ModelRow]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _listed(actor: Actor) -> Any:
    r = t.repositories.c
    q = sa.select(t.repositories.c.id).where(sa.or_(r.versions > 0, r.kind.is_not(None)))
    clause = permissions.visible(actor)
    return q if clause is None else q.where(clause)


def list_query(actor: Actor, text: str = "", sort: Sort = "name") -> Any:
    """The ids of the models `actor` may see, filtered by `text` (a part of the name), in `sort`'s
    order: by columns every writer keeps on the row (`core/repo_figures.py`), so a page is an index walk."""
    r = t.repositories.c
    q = _listed(actor)
    if text:
        q = q.where(r.name_key.contains(text.strip().lower(), autoescape=True))
    if sort == "size":
        return q.order_by(r.size.desc(), r.name_key)
    if sort == "age":
        return q.order_by(r.modified_at.desc(), r.name_key)
    return q.order_by(r.name_key)


def models_page(
    store: Store, actor: Actor, *, text: str = "", sort: Sort = "name", page: int = 1, per_page: int = 50
) -> ModelPage:
    """One page of the models `actor` may see, filtered by `text` (a part of the name), sorted."""
    q = list_query(actor, text, sort)
    page = max(1, page)
    with store.catalog.read() as conn:
        counted = q.order_by(None).subquery()
        total = int(conn.execute(sa.select(sa.func.count()).select_from(counted)).scalar() or 0)
        ids = [int(x) for x in conn.execute(q.limit(per_page).offset((page - 1) * per_page)).scalars()]
        rows = _rows(conn, ids)
    return ModelPage(rows, total, page, per_page)


def _rows(conn: sa.Connection, ids: list[int]) -> list[ModelRow]:
    if not ids:
        return []
    repos = {
        int(x.id): x
        for x in conn.execute(
            sa.select(
                t.repositories.c.id,
                t.repositories.c.name,
                t.repositories.c.owner,
                t.repositories.c.visibility,
                t.repositories.c.kind,
            ).where(t.repositories.c.id.in_(ids))
        )
    }
    tags: dict[int, tuple[int, float | None, float | None]] = {}
    for rid, n, used, modified in conn.execute(
        sa.select(
            t.tags.c.repository_id,
            sa.func.count(),
            sa.func.max(t.tags.c.last_used_at),
            sa.func.max(t.tags.c.modified_at),
        )
        .where(t.tags.c.repository_id.in_(ids))
        .group_by(t.tags.c.repository_id)
    ):
        tags[int(rid)] = (int(n), used, modified)
    figures = sizes(conn, ids)
    out = []
    for rid in ids:
        row = repos[rid]
        n, used, modified = tags.get(rid, (0, None, None))
        size, freed, versions = figures.get(rid, (0, 0, 0))
        out.append(
            ModelRow(
                row.name,
                display_repository(row.name),
                row.owner,
                row.visibility,
                row.kind,
                size,
                freed,
                n,
                versions,
                used,
                modified,
            )
        )
    return out


def sizes(conn: sa.Connection, ids: Iterable[int]) -> dict[int, tuple[int, int, int]]:
    """{repository id: (size, bytes deleting it frees, versions)} for these repositories only."""
    ids = sorted(set(ids))
    members: dict[int, set[str]] = defaultdict(set)
    for rid, m in conn.execute(
        sa.select(t.repo_manifests.c.repository_id, t.repo_manifests.c.manifest_digest).where(
            t.repo_manifests.c.repository_id.in_(ids)
        )
    ):
        members[int(rid)].add(m)
    own = {m for ms in members.values() for m in ms}
    children: dict[str, set[str]] = defaultdict(set)
    frontier = set(own)
    seen = set(own)
    while frontier:  # index manifests: their children, and theirs
        found = list(
            conn.execute(
                sa.select(t.manifest_children.c.parent_digest, t.manifest_children.c.child_digest).where(
                    t.manifest_children.c.parent_digest.in_(sorted(frontier))
                )
            )
        )
        frontier = set()
        for parent, child in found:
            children[parent].add(child)
            if child not in seen:
                seen.add(child)
                frontier.add(child)
    everything = sorted(seen)
    membership_count = _counts(conn, t.repo_manifests.c.manifest_digest, everything, 2)
    trashed = set(
        conn.execute(
            sa.select(t.trash.c.manifest_digest).where(t.trash.c.manifest_digest.in_(everything))
        ).scalars()
    )
    parents: dict[str, set[str]] = defaultdict(set)
    for parent, child in conn.execute(
        sa.select(t.manifest_children.c.parent_digest, t.manifest_children.c.child_digest).where(
            t.manifest_children.c.child_digest.in_(everything)
        )
    ):
        parents[child].add(parent)
    blobs_of: dict[str, set[str]] = defaultdict(set)
    for m, b in conn.execute(
        sa.select(t.manifest_blobs.c.manifest_digest, t.manifest_blobs.c.blob_digest).where(
            t.manifest_blobs.c.manifest_digest.in_(everything)
        )
    ):
        blobs_of[m].add(b)
    all_blobs = sorted({b for bs in blobs_of.values() for b in bs})
    # how many manifests name each blob, counted only up to one more than the page's manifests: a
    # blob goes when the leaving ones are all its holders, and a base layer the whole store shares
    # then costs no more than a layer of its own
    holders = _counts(conn, t.manifest_blobs.c.blob_digest, all_blobs, len(everything) + 1)
    blob_size: dict[str, int] = {}
    for b, size in conn.execute(
        sa.select(t.blobs.c.digest, t.blobs.c.size).where(
            t.blobs.c.digest.in_(all_blobs), t.blobs.c.state == "present"
        )
    ):
        blob_size[b] = int(size)
    out: dict[int, tuple[int, int, int]] = {}
    for rid in ids:
        roots = members.get(rid, set())
        closure, stack = set(roots), list(roots)
        while stack:
            for c in children.get(stack.pop(), ()):
                if c not in closure:
                    closure.add(c)
                    stack.append(c)
        leaving: set[str] = set()
        for m in sorted(roots):  # members leave with the repository unless held from outside it
            if membership_count.get(m, 0) <= 1 and m not in trashed and not parents.get(m, set()) - roots:
                leaving.add(m)
        grew = True
        while grew:  # children of leaving indexes leave when nothing else holds them
            grew = False
            for m in closure - leaving:
                if m in roots:
                    continue
                ps = parents.get(m, set())
                if ps and ps <= leaving and not membership_count.get(m, 0) and m not in trashed:
                    leaving.add(m)
                    grew = True
        mine = {b for m in closure for b in blobs_of.get(m, ())}
        named: dict[str, int] = defaultdict(int)
        for m in leaving:
            for b in blobs_of.get(m, ()):
                named[b] += 1
        freed = sum(blob_size.get(b, 0) for b, n in named.items() if holders.get(b, 0) == n)
        out[rid] = (sum(blob_size.get(b, 0) for b in mine), freed, len(roots))
    return out


def _counts(conn: sa.Connection, column: Any, values: list[str], limit: int) -> defaultdict[str, int]:
    """{value: rows of `column`'s table with it, counted up to `limit`}: one bounded index lookup per
    value (a statement compiled once), so it costs what the values hold up to `limit`."""
    stmt = sa.select(sa.func.count()).select_from(
        sa.select(sa.literal(1)).where(column == sa.bindparam("v")).limit(limit).subquery()
    )
    out: defaultdict[str, int] = defaultdict(int)
    for v in values:
        out[v] = int(conn.execute(stmt, {"v": v}).scalar() or 0)
    return out


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str
    shared_with: list[str]
    """The first few other models (that the actor may see) naming this blob."""
    shared_count: int


@dataclass(frozen=True)
class Version:
    digest: str
    media_type: str
    size: int
    created_at: float
    tags: list[str]
    untagged_at: float | None
    layers: list[Layer]
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TagInfo:
    name: str
    digest: str
    size: int
    created_at: float
    modified_at: float
    last_used_at: float


@dataclass(frozen=True)
class DependentRow:
    kind: str
    id: str
    target_kind: str
    target: str
    reason: str
    policy: str
    owner: str | None


@dataclass(frozen=True)
class ModelDetail:
    row: ModelRow
    created_at: float
    meta: dict[str, Any]
    tags: list[TagInfo]
    versions: list[Version]
    dependents: list[DependentRow]
    may_delete: bool


def _layers_of(content: bytes) -> dict[str, str]:
    """{digest: media type} of what a manifest names (config, layers, or an index's manifests)."""
    try:
        doc = json.loads(content)
    except ValueError:
        return {}
    out: dict[str, str] = {}
    if not isinstance(doc, dict):
        return out
    items = [doc.get("config"), *list(doc.get("layers") or []), *list(doc.get("blobs") or [])]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("digest"), str):
            out[item["digest"]] = str(item.get("mediaType", ""))
    return out


def model_detail(store: Store, actor: Actor, repository: str) -> ModelDetail | None:
    """One model as its page shows it; None if it does not exist for `actor`."""
    with store.catalog.read() as conn:
        repo = conn.execute(
            sa.select(t.repositories).where(t.repositories.c.name_key == repository.lower())
        ).first()
        if repo is None or not permissions.may_read(actor, repo.owner, repo.visibility):
            return None
        rid = int(repo.id)
        row = _rows(conn, [rid])[0]
        tag_rows = conn.execute(
            sa.select(t.tags, t.manifests.c.total_size)
            .join(t.manifests, t.manifests.c.digest == t.tags.c.manifest_digest)
            .where(t.tags.c.repository_id == rid)
            .order_by(t.tags.c.name_key)
        ).all()
        tags = [
            TagInfo(x.name, x.manifest_digest, int(x.total_size), x.created_at, x.modified_at, x.last_used_at)
            for x in tag_rows
        ]
        by_digest: dict[str, list[str]] = defaultdict(list)
        for tag in tags:
            by_digest[tag.digest].append(tag.name)
        mrows = conn.execute(
            sa.select(
                t.repo_manifests.c.manifest_digest,
                t.repo_manifests.c.created_at,
                t.repo_manifests.c.untagged_at,
                t.manifests.c.media_type,
                t.manifests.c.total_size,
                t.manifests.c.content,
            )
            .join(t.manifests, t.manifests.c.digest == t.repo_manifests.c.manifest_digest)
            .where(t.repo_manifests.c.repository_id == rid)
            .order_by(t.repo_manifests.c.created_at.desc())
        ).all()
        visible = permissions.visible(actor)
        versions = []
        for m in mrows:
            kinds = _layers_of(bytes(m.content))
            blob_rows = conn.execute(
                sa.select(t.manifest_blobs.c.blob_digest, t.blobs.c.size)
                .join(t.blobs, t.blobs.c.digest == t.manifest_blobs.c.blob_digest)
                .where(t.manifest_blobs.c.manifest_digest == m.manifest_digest)
            ).all()
            layers = []
            for b in sorted(blob_rows, key=lambda x: (-int(x.size), x.blob_digest)):
                names, count = _sharers(conn, b.blob_digest, rid, visible)
                layers.append(Layer(b.blob_digest, int(b.size), kinds.get(b.blob_digest, ""), names, count))
            kids = list(
                conn.execute(
                    sa.select(t.manifest_children.c.child_digest).where(
                        t.manifest_children.c.parent_digest == m.manifest_digest
                    )
                ).scalars()
            )
            versions.append(
                Version(
                    m.manifest_digest,
                    m.media_type,
                    int(m.total_size),
                    m.created_at,
                    sorted(by_digest.get(m.manifest_digest, [])),
                    m.untagged_at,
                    layers,
                    kids,
                )
            )
        deps: list[DependentRow] = []
        targets = [("repository", repo.name)] + [("tag", f"{repo.name}:{x.name}") for x in tags]
        targets += [("manifest", v.digest) for v in versions]
        for kind, target in targets:
            for d in dependents.of_target(conn, kind, target):
                deps.append(DependentRow(d.kind, d.id, d.target_kind, d.target, d.reason, d.policy, d.owner))
        try:
            meta = json.loads(repo.meta) if repo.meta else {}
        except ValueError:
            meta = {}
    return ModelDetail(
        row=row,
        created_at=repo.created_at,
        meta=meta if isinstance(meta, dict) else {"meta": meta},
        tags=tags,
        versions=versions,
        dependents=deps,
        may_delete=permissions.may_write(actor, repo.owner),
    )


def _sharers(conn: sa.Connection, blob: str, rid: int, visible: Any) -> tuple[list[str], int]:
    """Other repositories (that the actor may see) with a manifest naming `blob`: the first few, and how
    many. An indexed lookup by blob; a base layer shared by the whole store is counted, not listed."""
    q = (
        sa.select(t.repositories.c.name)
        .select_from(
            t.manifest_blobs.join(
                t.repo_manifests, t.repo_manifests.c.manifest_digest == t.manifest_blobs.c.manifest_digest
            ).join(t.repositories, t.repositories.c.id == t.repo_manifests.c.repository_id)
        )
        .where(t.manifest_blobs.c.blob_digest == blob, t.repositories.c.id != rid)
        .distinct()
    )
    if visible is not None:
        q = q.where(visible)
    count = int(conn.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar() or 0)
    names = [
        display_repository(n)
        for n in conn.execute(q.order_by(t.repositories.c.name).limit(SHARERS_SHOWN)).scalars()
    ]
    return names, count
