"""The audit log: every deletion, restore, purge, prune and GC, dry runs included."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.store import Store


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    face: str
    action: str
    target: str
    dry_run: bool
    outcome: str
    bytes_freed: int
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_audit(store: Store, *, since: float | None = None, limit: int = 1000) -> list[AuditEntry]:
    """Newest first; `since` is a POSIX time."""
    q = sa.select(t.audit).order_by(t.audit.c.at.desc(), t.audit.c.id.desc()).limit(limit)
    if since is not None:
        q = q.where(t.audit.c.at >= since)
    with store.catalog.read() as conn:
        return [
            AuditEntry(
                id=r.id,
                at=r.at,
                actor=r.actor,
                face=r.face,
                action=r.action,
                target=r.target,
                dry_run=bool(r.dry_run),
                outcome=r.outcome,
                bytes_freed=int(r.bytes_freed),
                detail=json.loads(r.detail or "{}"),
            )
            for r in conn.execute(q)
        ]
