"""Replicate's models and versions over the store, with Replicate's deletion rules as data for the planner.

A Replicate model is a repository of kind `replicate` (`registry.ollama.ai/<owner>/<name>`, so
`/v2/<owner>/<name>` is where `cog push` sends its images); its fields (description, hardware, ...)
are the repository's `meta`. A manifest stored in it is a version: its id is the digest's hex, and the
store also tags the manifest with that id, so every face lists the version as the tag
`<owner>/<name>:<id>`. A version's `cog_version` and `openapi_schema` come from the image config's
`org.cogmodel.*` (or `run.cog.*`) labels, else `0.9.0` and a minimal schema.

Deletion rules (README, "Safety rules"; Replicate's own, `../shared/seeds/001_*.txt`):
* the planner's ownership rule: only the owner, a member of the owning organisation, or an admin;
* registered here for the kind: a model or version goes only while the model is private, and a model
  only once no version is left;
* dependents (`core/dependents.py`) recorded here: another account's predictions with a version, a
  training based on it, a deployment whose current release uses it.
The planner asks all of them on every face, previews included; the face only maps the answer.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from modelhangar.core import dependents, model_rules, permissions
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.errors import Conflict, Denied, HangarError, NotFound, Refused
from modelhangar.core.names import DEFAULT_HOST
from modelhangar.core.store import Actor, Store, now

KIND = "replicate"
PREFIX = DEFAULT_HOST + "/"
DEFAULT_COG_VERSION = "0.9.0"
MINIMAL_SCHEMA: dict[str, Any] = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "paths": {},
    "components": {
        "schemas": {
            "Input": {"type": "object", "title": "Input", "properties": {}},
            "Output": {"title": "Output"},
        }
    },
}
HARDWARE: tuple[tuple[str, str], ...] = (
    ("cpu", "CPU"),
    ("gpu-t4", "Nvidia T4 GPU"),
    ("gpu-l40s", "Nvidia L40S GPU"),
    ("gpu-a40-small", "Nvidia A40 GPU"),
    ("gpu-a40-large", "Nvidia A40 (Large) GPU"),
    ("gpu-a100-large", "Nvidia A100 (80GB) GPU"),
)
SKUS = frozenset(s for s, _ in HARDWARE)
META_FIELDS = ("description", "github_url", "paper_url", "license_url", "cover_image_url")
NAME_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
"""A model or deployment name: Replicate's rule that is also one OCI path component (so it can be pushed)."""
OWNER_RE = re.compile(r"[a-z0-9](?:[a-z0-9]|[-_](?=[a-z0-9])){0,38}")
VERSION_RE = re.compile(r"[0-9a-f]{64}")
STATUSES = ("starting", "processing", "succeeded", "failed", "canceled")
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
RUNNER_ROLE = "runner"
"""A backend role whose accounts may report on any prediction or training (an external runner)."""
_LABELS = {
    "cog_version": ("org.cogmodel.cog_version", "run.cog.version"),
    "openapi_schema": ("org.cogmodel.openapi_schema", "run.cog.openapi_schema"),
}
MAX_CONFIG = 4 << 20


class Invalid(HangarError, ValueError):
    """A request a Replicate client sent that fails validation: `field` names what."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class InvalidVersion(HangarError):
    """A prediction's version does not exist or the caller may not use it (Replicate merges the two)."""


# ---------------------------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class Version:
    id: str
    created_at: float
    cog_version: str
    openapi_schema: dict[str, Any]
    training_id: str | None = None
    base_version: str | None = None


@dataclass(frozen=True)
class Model:
    id: int
    owner: str
    name: str
    visibility: str
    created_at: float
    meta: dict[str, Any]
    run_count: int = 0
    latest_version: Version | None = None

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class Run:
    """A prediction or a training, as recorded (modelhangar runs nothing; a runner reports)."""

    id: str
    kind: str
    model: str
    version: str
    creator: str
    status: str
    input: Any
    output: Any
    logs: str
    error: Any
    metrics: Any
    created_at: float
    started_at: float | None
    completed_at: float | None
    deployment: str | None = None
    destination: str | None = None


@dataclass(frozen=True)
class Deployment:
    owner: str
    name: str
    release: int
    model: str
    version: str
    hardware: str
    min_instances: int
    max_instances: int
    created_by: str
    released_at: float
    created_at: float


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def repository_name(owner: str, name: str) -> str:
    return f"{PREFIX}{owner}/{name}"


def model_key(repository: str) -> str:
    """`owner/name` of a catalog repository under the default host."""
    return repository[len(PREFIX) :] if repository.lower().startswith(PREFIX) else repository


def version_tag(owner_name: str, version_id: str) -> str:
    """The dependents' target of a version: its tag in the catalog."""
    return f"{PREFIX}{owner_name}:{version_id}"


def _who(actor: Actor) -> str:
    return actor.principal or actor.name


def _short(version_id: str) -> str:
    return version_id[:12] + "…"


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def decode_cursor(raw: str, n: int) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, TypeError):
        raise Invalid("invalid cursor", "cursor") from None
    if not isinstance(parts, list) or len(parts) != n:
        raise Invalid("invalid cursor", "cursor")
    return parts


def _after(cursor: str, ident_type: type) -> tuple[float, Any]:
    """(created at, id) of a page's last item, as `encode_cursor` wrote them."""
    created, ident = decode_cursor(cursor, 2)
    if not isinstance(created, int | float) or not isinstance(ident, ident_type):
        raise Invalid("invalid cursor", "cursor")
    return created, ident


# ---------------------------------------------------------------------------------------------- models


def _check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > 100:
        raise Invalid(
            "Enter a valid name. This value may contain only lowercase letters, numbers, dashes, "
            "underscores, or periods, and may not start or end with a dash, underscore, or period.",
            what,
        )
    return name


def _check_owner(owner: Any) -> str:
    if not isinstance(owner, str) or not OWNER_RE.fullmatch(owner):
        raise Invalid("Enter a valid owner: a user or organization name.", "owner")
    return owner


def _check_visibility(value: Any) -> str:
    if value not in permissions.VISIBILITIES:
        raise Invalid('visibility must be "public" or "private"', "visibility")
    return str(value)


def _check_hardware(value: Any) -> str:
    if value not in SKUS:
        raise Invalid(f"hardware must be one of {', '.join(sorted(SKUS))}", "hardware")
    return str(value)


def _check_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{key} must be a string", key)
    return value


def _model(row: Any, run_count: int = 0, latest: Version | None = None) -> Model:
    owner, _, name = model_key(row.name).partition("/")
    meta = json.loads(row.meta or "{}")
    return Model(int(row.id), owner, name, row.visibility, float(row.created_at), meta, run_count, latest)


def _repo_row(conn: sa.Connection, actor: Actor, owner: str, name: str, *, lock: bool = False) -> Any:
    """The model's repository row, if it is a Replicate model `actor` may read; else NotFound."""
    r = t.repositories
    q = sa.select(r).where(r.c.name_key == repository_name(owner, name).lower(), r.c.kind == KIND)
    row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None or not permissions.may_read(actor, row.owner, row.visibility):
        raise NotFound(f"model {owner}/{name} not found")
    return row


def _version_query() -> Any:
    v, tg, r = t.replicate_versions, t.tags, t.repositories
    return sa.select(
        tg.c.repository_id,
        v.c.version_id,
        tg.c.created_at,
        v.c.cog_version,
        v.c.openapi_schema,
        v.c.training_id,
        v.c.base_version,
    ).select_from(
        tg.join(r, r.c.id == tg.c.repository_id).join(
            v,
            sa.and_(
                v.c.repository_key == r.c.name_key,
                v.c.version_id == tg.c.name_key,
                v.c.manifest_digest == tg.c.manifest_digest,
            ),
        )
    )


def _version(row: Any) -> Version:
    return Version(
        row.version_id,
        float(row.created_at),
        row.cog_version,
        json.loads(row.openapi_schema),
        row.training_id,
        row.base_version,
    )


def _decorate(conn: sa.Connection, rows: list[Any]) -> list[Model]:
    """Models with their run counts and latest versions: two indexed queries for a whole page."""
    if not rows:
        return []
    ids = [int(r.id) for r in rows]
    latest: dict[int, Version] = {}
    q = _version_query().where(t.tags.c.repository_id.in_(ids))
    q = q.order_by(t.tags.c.created_at.desc(), t.replicate_versions.c.version_id.desc())
    for v in conn.execute(q):
        latest.setdefault(int(v.repository_id), _version(v))
    keys = [model_key(r.name).lower() for r in rows]
    runs = t.replicate_runs
    counts: dict[str, int] = dict(
        conn.execute(
            sa.select(runs.c.model, sa.func.count())
            .where(runs.c.model.in_(keys), runs.c.kind == "prediction")
            .group_by(runs.c.model)
        ).all()
    )
    return [_model(r, int(counts.get(model_key(r.name).lower(), 0)), latest.get(int(r.id))) for r in rows]


@retrying
def create_model(store: Store, actor: Actor, body: dict[str, Any]) -> Model:
    """Create an empty Replicate model (`POST /v1/models`): the owner must be the caller or an
    organisation it belongs to; visibility and hardware are required."""
    owner = _check_owner(body.get("owner"))
    name = _check_name(body.get("name"))
    visibility = _check_visibility(body.get("visibility"))
    meta: dict[str, Any] = {"hardware": _check_hardware(body.get("hardware"))}
    meta |= {key: _check_text(body, key) for key in META_FIELDS}
    repository = repository_name(owner, name)
    with store.catalog.write() as conn:
        account = conn.execute(sa.select(t.principals.c.name).where(t.principals.c.name == owner)).first()
        if not actor.acts_for(owner) or (account is None and not actor.admin):
            raise Denied(
                f"{_who(actor)} may not create models for {owner}: the owner must be you or an "
                "organization you belong to"
            )
        r = t.repositories
        if conn.execute(sa.select(r.c.id).where(r.c.name_key == repository.lower())).first() is not None:
            raise Conflict(f"A model named {owner}/{name} already exists")
        ts = now()
        conn.execute(
            r.insert().values(
                name=repository,
                name_key=repository.lower(),
                owner=owner if account is not None else None,
                created_at=ts,
                visibility=visibility,
                kind=KIND,
                meta=json.dumps(meta),
            )
        )
        row = conn.execute(sa.select(r).where(r.c.name_key == repository.lower())).one()
        return _model(row)


@retrying
def update_model(store: Store, actor: Actor, owner: str, name: str, body: dict[str, Any]) -> Model:
    """`PATCH /v1/models/{owner}/{name}` (models.update): its fields and its visibility (owner only)."""
    with store.catalog.write() as conn:
        row = _repo_row(conn, actor, owner, name, lock=True)
        if not actor.acts_for(row.owner):
            raise Denied(
                f"{_who(actor)} may not change {owner}/{name}: it belongs to {row.owner or 'the admin'}"
            )
        meta = json.loads(row.meta or "{}")
        values: dict[str, Any] = {}
        if "visibility" in body:
            values["visibility"] = _check_visibility(body["visibility"])
        if "hardware" in body:
            meta["hardware"] = _check_hardware(body["hardware"])
        meta |= {key: _check_text(body, key) for key in META_FIELDS if key in body}
        values["meta"] = json.dumps(meta)
        conn.execute(t.repositories.update().where(t.repositories.c.id == row.id).values(**values))
        row = conn.execute(sa.select(t.repositories).where(t.repositories.c.id == row.id)).one()
        return _decorate(conn, [row])[0]


def get_model(store: Store, actor: Actor, owner: str, name: str) -> Model:
    with store.catalog.read() as conn:
        return _decorate(conn, [_repo_row(conn, actor, owner, name)])[0]


PAGE = 25


def list_models(store: Store, actor: Actor, cursor: str | None = None, limit: int = PAGE) -> Page:
    """The Replicate models `actor` may see, newest first, one page (an index range, never the store)."""
    r = t.repositories
    q = sa.select(r).where(r.c.kind == KIND)
    clause = permissions.visible(actor)
    if clause is not None:
        q = q.where(clause)
    if cursor is not None:
        created, ident = _after(cursor, int)
        q = q.where(sa.or_(r.c.created_at < created, sa.and_(r.c.created_at == created, r.c.id < ident)))
    q = q.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(limit + 1)
    with store.catalog.read() as conn:
        rows = list(conn.execute(q).all())
        more = len(rows) > limit
        rows = rows[:limit]
        models = _decorate(conn, rows)
    nxt = encode_cursor(float(rows[-1].created_at), int(rows[-1].id)) if more and rows else None
    return Page(models, nxt)


def search_models(store: Store, actor: Actor, query: str, limit: int = 100) -> Page:
    """Models whose owner, name or description contains the query text (case-insensitive)."""
    r = t.repositories
    words = [w for w in query.lower().split() if w][:10]
    q = sa.select(r).where(r.c.kind == KIND)
    clause = permissions.visible(actor)
    if clause is not None:
        q = q.where(clause)
    for w in words:
        pattern = f"%{w}%"
        q = q.where(
            sa.or_(
                r.c.name_key.like(pattern, escape="\\"),
                sa.func.lower(sa.func.coalesce(r.c.meta, "")).like(pattern, escape="\\"),
            )
        )
    q = q.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(limit)
    with store.catalog.read() as conn:
        return Page(_decorate(conn, list(conn.execute(q).all())))


def _refuse_unless_ok(plan: Any, what: str) -> Any:
    if plan.not_found:
        raise NotFound(f"{what} not found")
    if plan.blockers:
        raise Refused(plan, f"refused to delete {what}")
    return plan


def delete_model(store: Store, actor: Actor, owner: str, name: str, *, dry_run: bool = False) -> Any:
    """Delete an empty private model through the planner (Refused names the blockers); its name is free
    again at once (Replicate keeps names forever: replicate-python #323)."""
    from modelhangar.core.planner import Planner, Target

    with store.catalog.read() as conn:
        row = _repo_row(conn, actor, owner, name)
    plan = Planner(store).delete([Target("repository", row.name)], actor, dry_run=dry_run)
    return _refuse_unless_ok(plan, f"model {owner}/{name}")


# ---------------------------------------------------------------------------------------------- versions


def list_versions(
    store: Store, actor: Actor, owner: str, name: str, cursor: str | None = None, limit: int = 100
) -> Page:
    q = _version_query()
    tg = t.tags
    if cursor is not None:
        created, ident = _after(cursor, str)
        q = q.where(
            sa.or_(tg.c.created_at < created, sa.and_(tg.c.created_at == created, tg.c.name_key < ident))
        )
    with store.catalog.read() as conn:
        row = _repo_row(conn, actor, owner, name)
        q = q.where(tg.c.repository_id == row.id).order_by(tg.c.created_at.desc(), tg.c.name_key.desc())
        found = [_version(v) for v in conn.execute(q.limit(limit + 1))]
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1].created_at, found[-1].id) if more and found else None)


def _find_version(conn: sa.Connection, repo_id: int, version_id: str) -> Version | None:
    q = _version_query().where(t.tags.c.repository_id == repo_id, t.tags.c.name_key == version_id.lower())
    row = conn.execute(q).first()
    return None if row is None else _version(row)


def get_version(store: Store, actor: Actor, owner: str, name: str, version_id: str) -> Version:
    with store.catalog.read() as conn:
        row = _repo_row(conn, actor, owner, name)
        found = _find_version(conn, row.id, version_id)
    if found is None:
        raise NotFound(f"version {version_id} of {owner}/{name} not found")
    return found


def delete_version(
    store: Store, actor: Actor, owner: str, name: str, version_id: str, *, dry_run: bool = False
) -> Any:
    """Delete a version through the planner: its manifest leaves the model with every tag on it, its
    unshared layers are reclaimed (or kept by the trash); Refused names every blocker."""
    from modelhangar.core.planner import Planner, Target

    with store.catalog.read() as conn:
        row = _repo_row(conn, actor, owner, name)
        found = _find_version(conn, row.id, version_id)
    if found is None:
        raise NotFound(f"version {version_id} of {owner}/{name} not found")
    target = Target("manifest", row.name, f"sha256:{found.id}")
    plan = Planner(store).delete([target], actor, dry_run=dry_run)
    return _refuse_unless_ok(plan, f"version {found.id} of {owner}/{name}")


def _labels(store: Store, refs: Any) -> dict[str, str]:
    cfg = refs.config
    if cfg is None or cfg.size > MAX_CONFIG:
        return {}
    try:
        with store.blobs.open(cfg.digest) as f:
            doc = json.loads(f.read(MAX_CONFIG))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    labels = doc.get("config") or doc.get("Config") or {}
    found = labels.get("Labels") if isinstance(labels, dict) else None
    return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}


@model_rules.on_push(KIND)
def _pushed(store: Any, conn: sa.Connection, repo: Any, digest: str, refs: Any, ts: float) -> None:
    """A manifest stored in a Replicate model is a version: tag it with its id, keep its Cog metadata,
    and, when a training into this model is under way, its lineage."""
    version_id = digest.removeprefix("sha256:")
    tg = t.tags
    if (
        conn.execute(
            sa.select(tg.c.name_key).where(tg.c.repository_id == repo.id, tg.c.name_key == version_id)
        ).first()
        is None
    ):
        conn.execute(
            tg.insert().values(
                repository_id=repo.id,
                name_key=version_id,
                name=version_id,
                manifest_digest=digest,
                created_at=ts,
                modified_at=ts,
                last_used_at=ts,
            )
        )
        conn.execute(
            t.repo_manifests.update()
            .where(t.repo_manifests.c.repository_id == repo.id, t.repo_manifests.c.manifest_digest == digest)
            .values(untagged_at=None)
        )
    v = t.replicate_versions
    if (
        conn.execute(
            sa.select(v.c.version_id).where(v.c.repository_key == repo.name_key, v.c.version_id == version_id)
        ).first()
        is not None
    ):
        return
    labels = _labels(store, refs)
    cog = next((labels[k] for k in _LABELS["cog_version"] if labels.get(k)), DEFAULT_COG_VERSION)
    schema: dict[str, Any] = MINIMAL_SCHEMA
    for k in _LABELS["openapi_schema"]:
        try:
            parsed = json.loads(labels[k]) if k in labels else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            schema = parsed
            break
    runs = t.replicate_runs
    dest = model_key(repo.name).lower()
    training = conn.execute(
        sa.select(runs)
        .where(
            runs.c.destination == dest,
            runs.c.kind == "training",
            runs.c.status.in_(("starting", "processing")),
        )
        .order_by(runs.c.created_at.desc())
        .limit(1)
    ).first()
    conn.execute(
        v.insert().values(
            repository_key=repo.name_key,
            version_id=version_id,
            manifest_digest=digest,
            cog_version=cog[:64],
            openapi_schema=json.dumps(schema),
            training_id=None if training is None else training.id,
            base_version=None if training is None else f"{training.model}:{training.version_id}",
            created_at=ts,
        )
    )
    if training is not None and training.output is None:
        conn.execute(
            runs.update()
            .where(runs.c.id == training.id)
            .values(output=json.dumps({"version": f"{model_key(repo.name)}:{version_id}", "weights": None}))
        )


# ---------------------------------------------------------------------------------------------- rules


def _version_ids(conn: sa.Connection, repo_id: int) -> list[str]:
    q = _version_query().where(t.tags.c.repository_id == repo_id).order_by(t.tags.c.created_at.desc())
    return [r.version_id for r in conn.execute(q)]


@model_rules.rule(KIND)
def _replicate_rules(conn: sa.Connection, removal: model_rules.Removal) -> list[model_rules.BlockerTuple]:
    """A model goes only while private and without versions; a version only while its model is private."""
    repo = removal.repository
    key = model_key(repo.name)
    leaving = sorted(
        tag for tag in removal.tags if VERSION_RE.fullmatch(tag) and f"sha256:{tag}" in removal.manifests
    )
    out: list[model_rules.BlockerTuple] = []
    if not removal.whole and not leaving:
        return out
    if repo.visibility != permissions.PRIVATE:
        what = "models" if removal.whole else "versions of models"
        out.append(("visibility", key, f"{key} is public: only {what} that are private can be deleted"))
    if removal.whole:
        out += [
            ("version", vid, f"a version of {key} remains: delete its versions first")
            for vid in _version_ids(conn, int(repo.id))
        ]
    return out


@model_rules.on_remove(KIND)
def _removed(conn: sa.Connection, repo: Any) -> None:
    """A model's versions' metadata goes with it, in the planner's transaction, whichever face deleted
    it: a new model of the same name starts without versions."""
    v = t.replicate_versions
    conn.execute(v.delete().where(v.c.repository_key == repo.name_key))


# ---------------------------------------------------------------------------------------------- runs


def _new_id() -> str:
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(26))


def _run(row: Any) -> Run:
    def load(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return Run(
        row.id,
        row.kind,
        row.model,
        row.version_id,
        row.creator,
        row.status,
        load(row.input),
        load(row.output),
        row.logs or "",
        load(row.error),
        load(row.metrics),
        float(row.created_at),
        row.started_at,
        row.completed_at,
        row.deployment,
        row.destination,
    )


def _split(ref: str) -> tuple[str, str]:
    owner, sep, name = ref.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise Invalid(f"{ref!r} is not owner/name", "model")
    return owner.lower(), name.lower()


def _resolve_version(conn: sa.Connection, actor: Actor, ref: str) -> tuple[Any, str]:
    """(repository row, version id) of `owner/name:id`, `owner/name` (its latest version) or a bare id."""
    ref = ref.strip()
    if VERSION_RE.fullmatch(ref.lower()):
        v, r = t.replicate_versions, t.repositories
        q = (
            sa.select(r)
            .select_from(v.join(r, r.c.name_key == v.c.repository_key))
            .where(v.c.version_id == ref.lower(), r.c.kind == KIND)
            .where(
                sa.exists().where(
                    t.tags.c.repository_id == r.c.id,
                    t.tags.c.name_key == v.c.version_id,
                    t.tags.c.manifest_digest == v.c.manifest_digest,
                )
            )
        )
        clause = permissions.visible(actor)
        row = conn.execute(q if clause is None else q.where(clause)).first()
        if row is None:
            raise InvalidVersion(ref)
        return row, ref.lower()
    model, _, vid = ref.partition(":")
    try:
        owner, name = _split(model)
        row = _repo_row(conn, actor, owner, name)
    except (Invalid, NotFound):
        raise InvalidVersion(ref) from None
    if vid:
        if _find_version(conn, row.id, vid) is None:
            raise InvalidVersion(ref)
        return row, vid.lower()
    ids = _version_ids(conn, row.id)
    if not ids:
        raise InvalidVersion(ref)
    return row, ids[0]


def _check_input(body: dict[str, Any]) -> Any:
    value = body.get("input")
    if not isinstance(value, dict):
        raise Invalid("input is required and must be an object", "input")
    return value


def _webhook(body: dict[str, Any]) -> str | None:
    hook = body.get("webhook")
    if hook is not None and not isinstance(hook, str):
        raise Invalid("webhook must be a URL", "webhook")
    return json.dumps({"url": hook, "events": body.get("webhook_events_filter")}) if hook else None


@retrying
def create_prediction(
    store: Store,
    actor: Actor,
    body: dict[str, Any],
    *,
    model: str | None = None,
    deployment: str | None = None,
) -> Run:
    """Record a prediction (status `starting`); an external runner reports the rest. Another account's
    prediction keeps the version from being deleted (a dependent of its tag)."""
    inp = _check_input(body)
    hook = _webhook(body)
    with store.catalog.write() as conn:
        dep_key = None
        if deployment is not None:
            dep = _deployment_row(conn, actor, deployment)
            dep_key = dep.name_key
            ref = f"{dep.model}:{dep.version_id}"
        elif model is not None:
            ref = model
        else:
            raw = body.get("version")
            if not isinstance(raw, str) or not raw:
                raise Invalid("version is required", "version")
            ref = raw
        repo, vid = _resolve_version(conn, actor, ref)
        key = model_key(repo.name).lower()
        ident, ts, creator = _new_id(), now(), _who(actor)
        conn.execute(
            t.replicate_runs.insert().values(
                id=ident,
                kind="prediction",
                model=key,
                version_id=vid,
                creator=creator,
                deployment=dep_key,
                status="starting",
                input=json.dumps(inp),
                logs="",
                webhook=hook,
                created_at=ts,
            )
        )
        if not actor.acts_for(repo.owner):
            dependents.record(
                conn,
                "predictions",
                creator,
                "tag",
                version_tag(key, vid),
                reason=f"{creator} has run predictions with it (latest {ident})",
                owner=creator,
            )
        return _run(conn.execute(sa.select(t.replicate_runs).where(t.replicate_runs.c.id == ident)).one())


def _run_row(conn: sa.Connection, actor: Actor, kind: str, ident: str, *, lock: bool = False) -> Any:
    runs = t.replicate_runs
    q = sa.select(runs).where(runs.c.id == ident, runs.c.kind == kind)
    row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise NotFound(f"{kind} {ident} not found")
    if actor.admin or actor.acts_for(row.creator) or RUNNER_ROLE in actor.roles:
        return row
    owner = conn.execute(
        sa.select(t.repositories.c.owner).where(
            t.repositories.c.name_key == repository_name(*_split(row.model))
        )
    ).first()
    if owner is not None and owner.owner is not None and actor.acts_for(owner.owner):
        return row
    raise NotFound(f"{kind} {ident} not found")


def get_run(store: Store, actor: Actor, kind: str, ident: str) -> Run:
    with store.catalog.read() as conn:
        return _run(_run_row(conn, actor, kind, ident))


def list_runs(store: Store, actor: Actor, kind: str, cursor: str | None = None, limit: int = 100) -> Page:
    """The caller's own predictions (or trainings), newest first."""
    runs = t.replicate_runs
    q = sa.select(runs).where(runs.c.kind == kind, runs.c.creator == _who(actor))
    if cursor is not None:
        created, ident = _after(cursor, str)
        q = q.where(
            sa.or_(runs.c.created_at < created, sa.and_(runs.c.created_at == created, runs.c.id < ident))
        )
    q = q.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
    with store.catalog.read() as conn:
        found = [_run(r) for r in conn.execute(q)]
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1].created_at, found[-1].id) if more and found else None)


def _release_training(conn: sa.Connection, row: Any) -> None:
    """A training that ended without a result no longer holds its base version."""
    dependents.forget(conn, "training", row.id)


@retrying
def cancel_run(store: Store, actor: Actor, kind: str, ident: str) -> Run:
    runs = t.replicate_runs
    with store.catalog.write() as conn:
        row = _run_row(conn, actor, kind, ident, lock=True)
        if row.status not in TERMINAL:
            conn.execute(
                runs.update().where(runs.c.id == ident).values(status="canceled", completed_at=now())
            )
            if kind == "training":
                _release_training(conn, row)
        return _run(conn.execute(sa.select(runs).where(runs.c.id == ident)).one())


@retrying
def report_run(store: Store, actor: Actor, kind: str, ident: str, body: dict[str, Any]) -> Run:
    """What an external runner reports: `status`, and any of `output`, `logs`, `error`, `metrics`.

    Allowed to admins, accounts with the `runner` role and those who may write the model. A run that
    ended (succeeded, failed, canceled) takes no more reports (Conflict)."""
    runs = t.replicate_runs
    status = body.get("status")
    if status is not None and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}", "status")
    logs = body.get("logs")
    if logs is not None and not isinstance(logs, str):
        raise Invalid("logs must be a string", "logs")
    with store.catalog.write() as conn:
        row = _run_row(conn, actor, kind, ident, lock=True)
        repo = conn.execute(
            sa.select(t.repositories).where(t.repositories.c.name_key == repository_name(*_split(row.model)))
        ).first()
        allowed = (
            actor.admin or RUNNER_ROLE in actor.roles or (repo is not None and actor.acts_for(repo.owner))
        )
        if not allowed:
            raise Denied(
                f"{_who(actor)} may not report on {kind} {ident}: only a runner or the model's owner"
            )
        if row.status in TERMINAL:
            raise Conflict(f"{kind} {ident} has already {row.status}")
        ts = now()
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = status
            if status != "starting" and row.started_at is None:
                values["started_at"] = ts
            if status in TERMINAL:
                values["completed_at"] = ts
        for key in ("output", "error", "metrics"):
            if key in body:
                values[key] = json.dumps(body[key])
        if logs is not None:
            values["logs"] = logs
        if values:
            conn.execute(runs.update().where(runs.c.id == ident).values(**values))
        if kind == "training" and status in ("failed", "canceled"):
            _release_training(conn, row)
        return _run(conn.execute(sa.select(runs).where(runs.c.id == ident)).one())


def pending_runs(store: Store, actor: Actor, limit: int = 100) -> list[Run]:
    """Predictions and trainings still `starting` that `actor` may run (a runner's work list)."""
    runs = t.replicate_runs
    q = sa.select(runs).where(runs.c.status == "starting").order_by(runs.c.created_at).limit(limit * 4)
    out: list[Run] = []
    with store.catalog.read() as conn:
        for row in conn.execute(q):
            try:
                _run_row(conn, actor, row.kind, row.id)
            except NotFound:
                continue
            out.append(_run(row))
            if len(out) >= limit:
                break
    return out


@retrying
def delete_prediction(store: Store, actor: Actor, ident: str) -> None:
    """Remove a recorded prediction (its creator or an admin): a modelhangar extension; once no
    prediction of that account uses the version, it no longer blocks deleting it."""
    runs = t.replicate_runs
    with store.catalog.write() as conn:
        row = _run_row(conn, actor, "prediction", ident, lock=True)
        if not (actor.admin or actor.acts_for(row.creator)):
            raise Denied(f"{_who(actor)} may not delete prediction {ident}: only its creator")
        conn.execute(runs.delete().where(runs.c.id == ident))
        left = conn.execute(
            sa.select(sa.literal(1))
            .where(
                runs.c.model == row.model,
                runs.c.version_id == row.version_id,
                runs.c.creator == row.creator,
                runs.c.kind == "prediction",
            )
            .limit(1)
        ).first()
        if left is None:
            dependents.forget(
                conn,
                "predictions",
                row.creator,
                target_kind="tag",
                target=version_tag(row.model, row.version_id),
            )


@retrying
def create_training(
    store: Store, actor: Actor, owner: str, name: str, version_id: str, body: dict[str, Any]
) -> Run:
    """Record a training of a version into `destination` (an existing model the caller may write); while
    it is not canceled or failed, the base version cannot be deleted. Versions pushed to the destination
    while it runs carry the base version in their lineage."""
    dest_raw = body.get("destination")
    if not isinstance(dest_raw, str):
        raise Invalid("destination is required (owner/name)", "destination")
    inp = _check_input(body)
    hook = _webhook(body)
    with store.catalog.write() as conn:
        base = _repo_row(conn, actor, owner, name)
        if _find_version(conn, base.id, version_id) is None:
            raise NotFound(f"version {version_id} of {owner}/{name} not found")
        try:
            d_owner, d_name = _split(dest_raw)
            dest = _repo_row(conn, actor, d_owner, d_name)
        except (Invalid, NotFound):
            raise NotFound("The specified training destination does not exist") from None
        if not actor.acts_for(dest.owner):
            raise Denied(f"{_who(actor)} may not train into {d_owner}/{d_name}: it is not theirs")
        key, vid = model_key(base.name).lower(), version_id.lower()
        ident, ts = _new_id(), now()
        dest_key = model_key(dest.name).lower()
        conn.execute(
            t.replicate_runs.insert().values(
                id=ident,
                kind="training",
                model=key,
                version_id=vid,
                creator=_who(actor),
                destination=dest_key,
                status="starting",
                input=json.dumps(inp),
                logs="",
                webhook=hook,
                created_at=ts,
            )
        )
        dependents.record(
            conn,
            "training",
            ident,
            "tag",
            version_tag(key, vid),
            reason=f"base version of training {ident} into {dest_key}",
            owner=_who(actor),
        )
        return _run(conn.execute(sa.select(t.replicate_runs).where(t.replicate_runs.c.id == ident)).one())


# ---------------------------------------------------------------------------------------------- deployments


def _deployment(row: Any) -> Deployment:
    return Deployment(
        row.owner,
        row.name,
        int(row.release),
        row.model,
        row.version_id,
        row.hardware,
        int(row.min_instances),
        int(row.max_instances),
        row.created_by,
        float(row.released_at),
        float(row.created_at),
    )


def _deployment_row(conn: sa.Connection, actor: Actor, ref: str, *, lock: bool = False) -> Any:
    d = t.replicate_deployments
    q = sa.select(d).where(d.c.name_key == ref.lower())
    row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None or not actor.acts_for(row.owner):
        raise NotFound(f"deployment {ref} not found")
    return row


def _instances(body: dict[str, Any], key: str, default: int | None, top: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise Invalid(f"{key} must be an integer from 0 to {top}", key)
    return value


def _release_target(conn: sa.Connection, row: Any) -> None:
    """The deployment's current release holds its version (a dependent of its tag)."""
    ident = f"{row.owner}/{row.name}"
    dependents.forget(conn, "deployment", ident)
    dependents.record(
        conn,
        "deployment",
        ident,
        "tag",
        version_tag(row.model, row.version_id),
        reason=f"used by deployment {ident} (current release {row.release})",
        owner=row.owner,
    )


@retrying
def create_deployment(store: Store, actor: Actor, body: dict[str, Any]) -> Deployment:
    name = _check_name(body.get("name"))
    model_raw = body.get("model")
    version_raw = body.get("version")
    if not isinstance(model_raw, str):
        raise Invalid("model is required (owner/name)", "model")
    if not isinstance(version_raw, str) or not VERSION_RE.fullmatch(version_raw.lower()):
        raise Invalid("version is required (a 64-character version id)", "version")
    hardware = _check_hardware(body.get("hardware"))
    low = _instances(body, "min_instances", 0, 5)
    high = _instances(body, "max_instances", 1, 20)
    if low > high:
        raise Invalid("min_instances may not exceed max_instances", "min_instances")
    owner = actor.principal or "local"
    d = t.replicate_deployments
    with store.catalog.write() as conn:
        m_owner, m_name = _split(model_raw)
        repo = _repo_row(conn, actor, m_owner, m_name)
        if _find_version(conn, repo.id, version_raw) is None:
            raise NotFound(f"version {version_raw} of {m_owner}/{m_name} not found")
        key = f"{owner}/{name}"
        if conn.execute(sa.select(d.c.name_key).where(d.c.name_key == key)).first() is not None:
            raise Conflict(f"A deployment named {key} already exists")
        ts = now()
        conn.execute(
            d.insert().values(
                name_key=key,
                owner=owner,
                name=name,
                release=1,
                model=model_key(repo.name).lower(),
                version_id=version_raw.lower(),
                hardware=hardware,
                min_instances=low,
                max_instances=high,
                created_by=_who(actor),
                released_at=ts,
                created_at=ts,
            )
        )
        row = conn.execute(sa.select(d).where(d.c.name_key == key)).one()
        _release_target(conn, row)
        return _deployment(row)


def get_deployment(store: Store, actor: Actor, owner: str, name: str) -> Deployment:
    with store.catalog.read() as conn:
        return _deployment(_deployment_row(conn, actor, f"{owner}/{name}"))


def list_deployments(store: Store, actor: Actor) -> Page:
    d = t.replicate_deployments
    q = sa.select(d).order_by(d.c.created_at.desc())
    if not actor.admin:
        q = q.where(d.c.owner.in_([n for n in (_who(actor), *sorted(actor.orgs)) if n]))
    with store.catalog.read() as conn:
        return Page([_deployment(r) for r in conn.execute(q.limit(1000))])


@retrying
def update_deployment(store: Store, actor: Actor, owner: str, name: str, body: dict[str, Any]) -> Deployment:
    """A new release: any of version, hardware, min/max instances; the new version is held instead."""
    d = t.replicate_deployments
    with store.catalog.write() as conn:
        row = _deployment_row(conn, actor, f"{owner}/{name}", lock=True)
        values: dict[str, Any] = {}
        if "version" in body:
            raw = body["version"]
            if not isinstance(raw, str) or not VERSION_RE.fullmatch(raw.lower()):
                raise Invalid("version must be a 64-character version id", "version")
            repo = _repo_row(conn, actor, *_split(row.model))
            if _find_version(conn, repo.id, raw) is None:
                raise NotFound(f"version {raw} of {row.model} not found")
            values["version_id"] = raw.lower()
        if "hardware" in body:
            values["hardware"] = _check_hardware(body["hardware"])
        if "min_instances" in body:
            values["min_instances"] = _instances(body, "min_instances", None, 5)
        if "max_instances" in body:
            values["max_instances"] = _instances(body, "max_instances", None, 20)
        if values.get("min_instances", row.min_instances) > values.get("max_instances", row.max_instances):
            raise Invalid("min_instances may not exceed max_instances", "min_instances")
        if values:
            values |= {"release": row.release + 1, "released_at": now(), "created_by": _who(actor)}
            conn.execute(d.update().where(d.c.name_key == row.name_key).values(**values))
        row = conn.execute(sa.select(d).where(d.c.name_key == row.name_key)).one()
        _release_target(conn, row)
        return _deployment(row)


@retrying
def delete_deployment(store: Store, actor: Actor, owner: str, name: str) -> None:
    d = t.replicate_deployments
    with store.catalog.write() as conn:
        row = _deployment_row(conn, actor, f"{owner}/{name}", lock=True)
        conn.execute(d.delete().where(d.c.name_key == row.name_key))
        dependents.forget(conn, "deployment", f"{row.owner}/{row.name}")
