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
    tags: frozenset[str] = frozenset()
    """The names of the tags that leave it."""


KIND_MODULES = ("modelhangar.core.replicate_models", "modelhangar.core.ml_models")
"""The core modules that register rules (and push hooks) for a kind: imported before the first is
asked, wherever the planner or the store runs (servers, the CLI), whichever faces are loaded."""
_loaded = False


def _load() -> None:
    global _loaded
    if not _loaded:
        import importlib

        for name in KIND_MODULES:
            importlib.import_module(name)
        _loaded = True


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
    _load()
    kind = removal.repository.kind
    return [b for fn in RULES.get(kind, ()) for b in fn(conn, removal)] if kind else []


PushHook = Callable[[Any, sa.Connection, Any, str, Any, float], None]
"""(store, conn, repository row, manifest digest, its ManifestRefs, time): run in the transaction that
stores a manifest in a repository of the hook's kind (Replicate: the manifest becomes a version)."""
PUSH_HOOKS: dict[str, list[PushHook]] = {}


def on_push(kind: str) -> Callable[[PushHook], PushHook]:
    """Register what storing a manifest in a repository of `kind` also does."""

    def register(fn: PushHook) -> PushHook:
        PUSH_HOOKS.setdefault(kind, []).append(fn)
        return fn

    return register


def pushed(store: Any, conn: sa.Connection, repository: Any, digest: str, refs: Any, ts: float) -> None:
    _load()
    for fn in PUSH_HOOKS.get(repository.kind or "", ()):
        fn(store, conn, repository, digest, refs, ts)


RemoveHook = Callable[[sa.Connection, Any], None]
"""(conn, repository row): run in the planner's transaction that removes a repository of the hook's
kind (the model object), whichever face asked (Replicate: its versions' metadata goes with it)."""
REMOVE_HOOKS: dict[str, list[RemoveHook]] = {}


def on_remove(kind: str) -> Callable[[RemoveHook], RemoveHook]:
    """Register what removing a whole repository of `kind` also removes."""

    def register(fn: RemoveHook) -> RemoveHook:
        REMOVE_HOOKS.setdefault(kind, []).append(fn)
        return fn

    return register


def removed(conn: sa.Connection, repository: Any) -> None:
    _load()
    for fn in REMOVE_HOOKS.get(repository.kind or "", ()):
        fn(conn, repository)
