"""Dependents: anything outside the store that uses a model (a deployment, a pipeline, an agent, a
fine-tune, someone's prediction). They are rows, recorded when the user is created and dropped when it
goes, so the planner finds every one with an indexed lookup and refuses a delete or an overwrite that
would break it (README, "Safety rules"); a new kind of user needs no new deletion code.

A dependent names its target as a repository (`name`), a tag (`repository:tag`) or a manifest
(`sha256:<hex>`); names match case-insensitively, as model names do. Its `policy` says what it does
to a deletion: `block` (the default) refuses it; `warn` only names it in the plan (it would break);
`setting:<key>` blocks while the shared setting `<key>` is true and warns otherwise (OpenSearch's
safe delete).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.store import now

TargetKind = Literal["repository", "tag", "manifest"]


@dataclass(frozen=True)
class Dependent:
    kind: str
    id: str
    target_kind: str
    target: str
    owner: str | None
    reason: str
    policy: str = "block"


def record(
    conn: sa.Connection,
    kind: str,
    ident: str,
    target_kind: TargetKind,
    target: str,
    *,
    reason: str,
    owner: str | None = None,
    policy: str = "block",
) -> None:
    """Record (or update) that `kind` `ident` uses `target`."""
    forget(conn, kind, ident, target_kind=target_kind, target=target)
    conn.execute(
        t.dependents.insert().values(
            kind=kind,
            id=ident,
            target_kind=target_kind,
            target=target,
            target_key=target.lower(),
            owner=owner,
            reason=reason,
            policy=policy,
            created_at=now(),
        )
    )


def forget(
    conn: sa.Connection,
    kind: str,
    ident: str,
    *,
    target_kind: str | None = None,
    target: str | None = None,
) -> int:
    """Drop what `kind` `ident` uses (all of it, or one target); returns the rows dropped."""
    d = t.dependents
    q = d.delete().where(d.c.kind == kind, d.c.id == ident)
    if target_kind is not None:
        q = q.where(d.c.target_kind == target_kind)
    if target is not None:
        q = q.where(d.c.target_key == target.lower())
    return int(conn.execute(q).rowcount or 0)


def of_target(conn: sa.Connection, target_kind: str, target: str) -> list[Dependent]:
    """Everything that uses `target` (an indexed lookup)."""
    d = t.dependents
    q = (
        sa.select(d.c.kind, d.c.id, d.c.target_kind, d.c.target, d.c.owner, d.c.reason, d.c.policy)
        .where(d.c.target_kind == target_kind, d.c.target_key == target.lower())
        .order_by(d.c.kind, d.c.id)
    )
    return [Dependent(*r) for r in conn.execute(q)]
