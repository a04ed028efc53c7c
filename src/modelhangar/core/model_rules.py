"""Deletion rules that depend on what kind of model a repository is: data for the one planner.

A face that keeps model objects of its own (Replicate's models, OpenSearch's model groups) marks
their repositories with a `kind`, and registers here, in the core, the rules its users expect
(Replicate: a model goes only when private and without versions). The planner asks every rule of a
repository's kind for blockers on each deletion, on every face, previews included; a face never
checks them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelhangar.core.actors import Actor


@dataclass(frozen=True)
class Removal:
    """What a deletion takes from one repository."""

    repository: Any
    """Its catalog row (`id`, `name`, `owner`, `visibility`, `kind`, `meta`)."""
    whole: bool
    """The repository itself goes (the model), not only some of its versions."""
    manifests: frozenset[str]
    """The manifests (versions) that leave it."""
    actor: Actor


BlockerTuple = tuple[str, str, str]
"""(kind, id, reason), as the planner's Blocker."""
Rule = Callable[[sa.Connection, Removal], list[BlockerTuple]]
RULES: dict[str, list[Rule]] = {}


def rule(kind: str) -> Callable[[Rule], Rule]:
    """Register a deletion rule for repositories of `kind`."""

    def register(fn: Rule) -> Rule:
        RULES.setdefault(kind, []).append(fn)
        return fn

    return register


def blockers(conn: sa.Connection, removal: Removal) -> list[BlockerTuple]:
    kind = removal.repository.kind
    return [b for fn in RULES.get(kind, ()) for b in fn(conn, removal)] if kind else []
