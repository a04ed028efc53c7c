"""Disk usage: per model its size, the bytes only it uses (what deleting it frees), and the total."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.store import Store


@dataclass(frozen=True)
class ModelUsage:
    repository: str
    tag: str
    manifest_digest: str
    size: int
    unique_size: int
    shared_size: int
    shared_with: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    models: list[ModelUsage]
    trash_size: int
    total: int
    blob_count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def disk_usage(store: Store, *, with_sharers: bool = True) -> Usage:
    """One pass over the catalog; `total` is the bytes of every blob the store holds."""
    mb, b = t.manifest_blobs, t.blobs
    with store.catalog.read() as conn:
        holders = {
            r.blob_digest: int(r.n)
            for r in conn.execute(
                sa.select(mb.c.blob_digest, sa.func.count().label("n")).group_by(mb.c.blob_digest)
            )
        }
        sizes = {
            r.digest: int(r.size)
            for r in conn.execute(sa.select(b.c.digest, b.c.size).where(b.c.state == "present"))
        }
        blobs_of: dict[str, list[str]] = {}
        for r in conn.execute(sa.select(mb.c.manifest_digest, mb.c.blob_digest)):
            blobs_of.setdefault(r.manifest_digest, []).append(r.blob_digest)
        tag_rows = conn.execute(
            sa.select(t.repositories.c.name, t.tags.c.name.label("tag"), t.tags.c.manifest_digest)
            .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
            .order_by(t.repositories.c.name, t.tags.c.name)
        ).all()
        trash_digests = [r.manifest_digest for r in conn.execute(sa.select(t.trash.c.manifest_digest))]
    tags_per_manifest: dict[str, list[str]] = {}
    for tr in tag_rows:
        tags_per_manifest.setdefault(tr.manifest_digest, []).append(f"{tr.name}:{tr.tag}")
    holders_of_blob: dict[str, list[str]] = {}
    if with_sharers:
        for m, blist in blobs_of.items():
            for d in blist:
                holders_of_blob.setdefault(d, []).extend(tags_per_manifest.get(m, ["(trash)"]))
    models = []
    for mr in tag_rows:
        own = f"{mr.name}:{mr.tag}"
        blist = blobs_of.get(mr.manifest_digest, [])
        size = sum(sizes.get(d, 0) for d in blist)
        alone = len(tags_per_manifest[mr.manifest_digest]) == 1 and mr.manifest_digest not in trash_digests
        unique = sum(sizes.get(d, 0) for d in blist if alone and holders.get(d, 0) == 1)
        sharers: set[str] = set()
        if with_sharers:
            for d in blist:
                if not (alone and holders.get(d, 0) == 1):
                    sharers.update(h for h in holders_of_blob.get(d, []) if h != own)
        models.append(
            ModelUsage(mr.name, mr.tag, mr.manifest_digest, size, unique, size - unique, sorted(sharers))
        )
    trash_blobs = {d for m in trash_digests for d in blobs_of.get(m, [])}
    live_blobs = {d for lr in tag_rows for d in blobs_of.get(lr.manifest_digest, [])}
    trash_size = sum(sizes.get(d, 0) for d in trash_blobs - live_blobs)
    return Usage(models=models, trash_size=trash_size, total=sum(sizes.values()), blob_count=len(sizes))
