"""Deleting models by name, one result per name (bulk deletes are never all-or-nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from modelhangar.core.errors import model_not_found
from modelhangar.core.names import InvalidName, display_stored, parse_name
from modelhangar.core.planner import Plan, Planner, Target
from modelhangar.core.store import Actor, Store

Status = Literal["deleted", "trashed", "would_delete", "not_found", "refused", "invalid"]


@dataclass(frozen=True)
class ModelDeletion:
    model: str
    status: Status
    plan: Plan | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("deleted", "trashed", "would_delete")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "status": self.status,
            "error": self.error,
            "plan": self.plan.to_dict() if self.plan else None,
        }


def model_target(raw: str) -> Target:
    """The planner target for an Ollama-style model name (raises InvalidName)."""
    name = parse_name(raw)
    return Target("tag", name.repository, name.tag)


def delete_models(
    store: Store,
    names: list[str],
    actor: Actor,
    *,
    dry_run: bool = False,
    purge: bool = False,
    action: str = "delete",
) -> list[ModelDeletion]:
    """Delete (or preview deleting) each model in turn; a bulk preview counts what the bulk delete frees."""
    labeled: list[tuple[str, Target | str]] = []
    for raw in names:
        try:
            labeled.append((raw, model_target(raw)))
        except InvalidName as e:
            labeled.append((raw, e.detail))
    return delete_targets(store, labeled, actor, dry_run=dry_run, purge=purge, action=action)


def delete_targets(
    store: Store,
    labeled: list[tuple[str, Target | str]],
    actor: Actor,
    *,
    dry_run: bool = False,
    purge: bool = False,
    action: str = "delete",
) -> list[ModelDeletion]:
    """Delete (or preview) each `(label, target)` in turn, one result per label; a `str` in place of a
    target is the reason the label could not be read (an `invalid` result)."""
    planner = Planner(store)
    targets = {i: x for i, (_, x) in enumerate(labeled) if isinstance(x, Target)}
    if dry_run:
        previews = planner.preview([[x] for x in targets.values()], actor, purge=purge, action=action)
        plans = dict(zip(targets, previews, strict=True))
    else:
        plans = {i: planner.delete([x], actor, purge=purge, action=action) for i, x in targets.items()}
    results = []
    for i, (raw, target) in enumerate(labeled):
        plan = plans.get(i)
        if plan is None:
            results.append(ModelDeletion(raw, "invalid", None, str(target)))
        elif plan.not_found:
            assert isinstance(target, Target)
            shown = display_stored(target.repository, target.ref) if target.kind == "tag" else None
            results.append(ModelDeletion(raw, "not_found", plan, model_not_found(shown or raw)))
        elif plan.blockers:
            reasons = "; ".join(f"{b.kind} {b.id}: {b.reason}" for b in plan.blockers)
            results.append(ModelDeletion(raw, "refused", plan, f"refused: {reasons}"))
        elif dry_run:
            results.append(ModelDeletion(raw, "would_delete", plan))
        else:
            results.append(ModelDeletion(raw, "trashed" if plan.trash else "deleted", plan))
    return results
