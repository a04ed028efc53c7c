"""The audit log: every deletion, restore, purge, prune and GC, dry runs included."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.store import Actor, Store


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
    token_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_audit(
    store: Store,
    *,
    since: float | None = None,
    limit: int = 1000,
    actor: Actor | None = None,
    face: str | None = None,
    by: str | None = None,
) -> list[AuditEntry]:
    """Newest first; `since` is a POSIX time. An actor who is no admin sees only its own entries;
    `face` and `by` (an actor's name) filter."""
    q = sa.select(t.audit).order_by(t.audit.c.at.desc(), t.audit.c.id.desc()).limit(limit)
    if since is not None:
        q = q.where(t.audit.c.at >= since)
    if actor is not None and not actor.admin:
        q = q.where(t.audit.c.actor == (actor.principal or actor.name))
    if face is not None:
        q = q.where(t.audit.c.face == face)
    if by is not None:
        q = q.where(t.audit.c.actor == by)
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
                token_name=r.token_name,
            )
            for r in conn.execute(q)
        ]
