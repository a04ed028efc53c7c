"""OpenSearch ML Commons' objects and rules, kept in the catalog (no HTTP: `faces/opensearch/` maps it).

Model groups, models (each model is one version of its group), tasks, connectors, ingest and search
pipelines, agents, and the two cluster settings that change behaviour
(`plugins.ml_commons.safe_delete_model`, `plugins.ml_commons.model_access_control_enabled`).

* A group is a repository of the one store, `registry.ollama.ai/opensearch/<group>` (kind
  `opensearch`), so `opensearch/<group>:<version>` is how every other face shows its models (du,
  previews, the audit log); a model's content is a blob of the store, shared with whatever else
  holds the same bytes, and its ML Commons document is the manifest's config.
* Who may act on a group follows ML Commons (README, "Safety rules"): with access control on, the
  owner, users sharing a backend role for `restricted`, everyone for `public`; admins always. Once
  that check passes, the deletion goes through the planner as the same user with the group's rights.
* Pipelines and agents are dependents of the models they name (`core/dependents.py`), recorded when
  they are stored and dropped when they change or go, with the policy
  `setting:plugins.ml_commons.safe_delete_model`: they refuse a delete while safe delete is on and
  are listed as warnings in every preview while it is off. No delete walks the pipelines.
* The last model of a group takes the group with it, as the seed says (`../shared/reference`
  point 1); deleting a group that still holds models is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from modelhangar.core import dependents, model_rules, shared_settings
from modelhangar.core.actors import Actor
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import retrying
from modelhangar.core.errors import DigestMismatch, HangarError
from modelhangar.core.manifests import OCI_MANIFEST
from modelhangar.core.names import DEFAULT_HOST
from modelhangar.core.planner import Planner, Target
from modelhangar.core.store import Store

SAFE_DELETE = "plugins.ml_commons.safe_delete_model"
ACCESS_CONTROL = "plugins.ml_commons.model_access_control_enabled"
PERSISTENT, TRANSIENT = "opensearch.cluster.persistent", "opensearch.cluster.transient"
REPO_KIND = "opensearch"
NAMESPACE = "opensearch"
CONFIG_MEDIA = "application/vnd.modelhangar.opensearch.model.v1+json"
CONTENT_MEDIA = "application/vnd.modelhangar.opensearch.model.content.v1"
CHUNK_MAX = 10_000_000
"""ML Commons' chunk size (`ModelHelper.CHUNK_SIZE`)."""
MODEL_MAX = 4_000_000_000
"""ML Commons' largest model (`MODEL_MAX_SIZE`): the bound on a `url` fetch and on an upload."""
NODE = "hangar"
DEPENDENT_KINDS = {"ingest": "ingest pipeline", "search": "search pipeline", "agent": "agent"}
INDEX = {
    "group": ".plugins-ml-model-group",
    "model": ".plugins-ml-model",
    "task": ".plugins-ml-task",
    "connector": ".plugins-ml-connector",
    "agent": ".plugins-ml-agent",
}
DEPLOYED_STATES = {"LOADED", "LOADING", "PARTIALLY_LOADED", "DEPLOYED", "DEPLOYING", "PARTIALLY_DEPLOYED"}
HIDDEN = "__hangar"
"""The key of a document that holds modelhangar's own fields (never shown)."""


class MLError(HangarError):
    """An answer in ML Commons' terms: its HTTP status, exception type and reason."""

    def __init__(
        self, status: int, reason: str, type_: str = "status_exception", causes: list[str] | None = None
    ):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.type = type_
        self.causes = causes or [reason]


def bad(reason: str) -> MLError:
    return MLError(400, reason, "illegal_argument_exception")


def millis() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return secrets.token_urlsafe(15)


def admin_as(actor: Actor) -> Actor:
    """The same user with the rights of a group it may act on (its ML Commons check passed)."""
    return replace(actor, admin=True, face="opensearch")


# ---------------------------------------------------------------------------------------- documents


def _row(conn: sa.Connection, kind: str, ident: str, *, lock: bool = False) -> Any:
    q = sa.select(t.ml_objects).where(t.ml_objects.c.kind == kind, t.ml_objects.c.id == ident)
    return conn.execute(q.with_for_update() if lock else q).first()


def _doc(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(row.doc)
    return out


def _put(
    conn: sa.Connection,
    kind: str,
    ident: str,
    doc: dict[str, Any],
    *,
    name_key: str | None = None,
    parent: str | None = None,
    owner: str | None = None,
) -> int:
    old = _row(conn, kind, ident)
    seq = (int(old.seq) if old is not None else 0) + 1
    values = {"doc": json.dumps(doc), "seq": seq, "name_key": name_key, "parent": parent, "owner": owner}
    if old is None:
        conn.execute(t.ml_objects.insert().values(kind=kind, id=ident, created_at=time.time(), **values))
    else:
        conn.execute(
            t.ml_objects.update()
            .where(t.ml_objects.c.kind == kind, t.ml_objects.c.id == ident)
            .values(**values)
        )
    return seq


def _drop(conn: sa.Connection, kind: str, ident: str) -> int:
    row = _row(conn, kind, ident)
    conn.execute(t.ml_objects.delete().where(t.ml_objects.c.kind == kind, t.ml_objects.c.id == ident))
    return int(row.seq) + 1 if row is not None else 1


def shown(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != HIDDEN}


def delete_response(kind: str, ident: str, version: int, result: str = "deleted") -> dict[str, Any]:
    """OpenSearch's document-delete body (the seed's)."""
    return {
        "_index": INDEX[kind],
        "_id": ident,
        "_version": version,
        "result": result,
        "forced_refresh": True,
        "_shards": {"total": 1, "successful": 1, "failed": 0},
        "_seq_no": version,
        "_primary_term": 1,
    }


# ---------------------------------------------------------------------------------------- settings


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in sorted(flat.items()):
        node = out
        *path, last = key.split(".")
        for p in path:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[last] = value
    return out


def _as_setting(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise bad(f"cannot set a setting to {json.dumps(value)}")
    return str(value)


BOOLEAN_SETTINGS = (SAFE_DELETE, ACCESS_CONTROL)


def check_settings_admin(actor: Actor) -> None:
    """Only admins change the cluster's settings (`cluster:admin/settings/update`): 403 otherwise."""
    if not actor.admin:
        raise MLError(
            403,
            f"no permissions for [cluster:admin/settings/update] and User [name={actor.name}]",
            "security_exception",
        )


def put_cluster_settings(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    """`PUT /_cluster/settings` (after `check_settings_admin`): persistent and transient, nested or flat;
    transient wins."""
    answer: dict[str, Any] = {"acknowledged": True}
    with store.catalog.write() as conn:
        for scope, key in (("persistent", PERSISTENT), ("transient", TRANSIENT)):
            given = body.get(scope) or {}
            if not isinstance(given, dict):
                raise bad(f"[{scope}] must be an object")
            flat: dict[str, Any] = {}
            _flatten("", given, flat)
            current: dict[str, str] = dict(shared_settings.read(conn, key, {}) or {})
            changed: dict[str, Any] = {}
            for name, raw in flat.items():
                value = _as_setting(raw)
                if name in BOOLEAN_SETTINGS and value is not None and value.lower() not in ("true", "false"):
                    raise bad(f"Failed to parse value [{value}] as only [true] or [false] are allowed.")
                if value is None:
                    current.pop(name, None)
                else:
                    current[name] = value.lower() if name in BOOLEAN_SETTINGS else value
                    changed[name] = current[name]
            shared_settings.write(conn, key, current or None)
            answer[scope] = _nest(changed)
        persistent = shared_settings.read(conn, PERSISTENT, {}) or {}
        transient = shared_settings.read(conn, TRANSIENT, {}) or {}
        for name in BOOLEAN_SETTINGS:  # what the planner's `setting:` policy and the face read
            effective = transient.get(name, persistent.get(name, "false"))
            shared_settings.write(conn, name, effective == "true")
    return answer


def get_cluster_settings(store: Store, *, flat: bool = False, defaults: bool = False) -> dict[str, Any]:
    with store.catalog.read() as conn:
        persistent = shared_settings.read(conn, PERSISTENT, {}) or {}
        transient = shared_settings.read(conn, TRANSIENT, {}) or {}
    shape: Callable[[dict[str, Any]], dict[str, Any]] = (lambda d: dict(d)) if flat else _nest
    out = {"persistent": shape(persistent), "transient": shape(transient)}
    if defaults:
        out["defaults"] = shape({SAFE_DELETE: "false", ACCESS_CONTROL: "false"})
    return out


def _control_on(conn: sa.Connection) -> bool:
    return shared_settings.is_true(conn, ACCESS_CONTROL)


# ---------------------------------------------------------------------------------------- access


def _may(conn: sa.Connection, actor: Actor, group: dict[str, Any] | None) -> bool:
    """ML Commons' `checkModelGroupPermission` (README, "Safety rules")."""
    return group is None or actor.admin or not _control_on(conn) or _group_allows(actor, group)


def _group_allows(actor: Actor, group: dict[str, Any]) -> bool:
    """`_may` once access control is known to be on and `actor` is not an admin."""
    owner = (group.get("owner") or {}).get("name")
    access = group.get("access", "public")
    if owner is None or access == "public":
        return True
    if access == "restricted":
        return bool(actor.roles & set(group.get("backend_roles") or ()))
    return bool(owner == actor.principal)


def _visibility(access: str) -> str:
    return "public" if access == "public" else "private"


# ---------------------------------------------------------------------------------------- groups


_SLUG_RE = re.compile(r"[^a-z0-9_.-]+")


def _repository_for(conn: sa.Connection, name: str, ident: str) -> str:
    slug = _SLUG_RE.sub("-", name.lower()).strip("-.") or "group"
    slug = slug[:60].rstrip("-.")
    if slug[0] in "._-":
        slug = "g" + slug
    repo = f"{DEFAULT_HOST}/{NAMESPACE}/{slug}"
    taken = (
        conn.execute(sa.select(t.repositories.c.id).where(t.repositories.c.name_key == repo.lower())).first()
        or conn.execute(
            sa.select(t.ml_objects.c.id).where(
                t.ml_objects.c.kind == "grouprepo", t.ml_objects.c.id == repo.lower()
            )
        ).first()
    )
    if taken:
        repo = f"{repo}-{ident[:8].lower().replace('_', '0')}"
    return repo


def _access_fields(
    conn: sa.Connection, actor: Actor, body: dict[str, Any], *, registering: bool
) -> tuple[str | None, list[str] | None]:
    """(access mode, backend roles) a register or update asks for, checked as ML Commons checks them
    with access control on; with it off they are kept as given (reference point 2)."""
    mode = body.get("access_mode")
    roles = body.get("backend_roles")
    add_all = body.get("add_all_backend_roles")
    if mode is not None and (
        not isinstance(mode, str) or mode.lower() not in ("public", "private", "restricted")
    ):
        raise bad(f"Invalid access mode: {mode}")
    if roles is not None and (not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)):
        raise bad("backend_roles must be a list of strings")
    mode = mode.lower() if isinstance(mode, str) else None
    roles = list(roles) if roles else None
    if not _control_on(conn):
        if mode is None and registering:
            mode = "restricted" if roles else "public"
        return mode, roles
    if mode is None:
        if roles and add_all:
            raise bad("You cannot specify backend roles and add all backend roles at the same time.")
        if roles or add_all:
            mode = "restricted"
        elif registering:
            mode = "private"
    if mode in ("public", "private") and (roles or add_all):
        raise bad("You can specify backend roles only for a model group with the restricted access mode.")
    if mode == "restricted":
        if actor.admin and add_all:
            raise bad("Admin users cannot add all backend roles to a model group.")
        if not actor.admin and not actor.roles:
            raise bad("You must have at least one backend role to register a restricted model group.")
        if not roles and not add_all:
            raise bad(
                "You must specify one or more backend roles or add all backend roles to register a restricted model group."  # noqa: E501
            )
        if roles and add_all:
            raise bad("You cannot specify backend roles and add all backend roles at the same time.")
        if add_all:
            roles = sorted(actor.roles)
        elif not actor.admin and not set(roles or ()) <= actor.roles:
            raise bad("You don't have the backend roles specified.")
    return mode, roles


def _group_by_name(conn: sa.Connection, name: str) -> Any:
    return conn.execute(
        sa.select(t.ml_objects).where(t.ml_objects.c.kind == "group", t.ml_objects.c.name_key == name.lower())
    ).first()


def _create_group(
    conn: sa.Connection, actor: Actor, name: str, description: str | None, mode: str, roles: list[str] | None
) -> tuple[str, dict[str, Any]]:
    ident = new_id()
    ts = millis()
    repo = _repository_for(conn, name, ident)
    doc: dict[str, Any] = {"name": name, "latest_version": 0}
    if description is not None:
        doc["description"] = description
    if roles:
        doc["backend_roles"] = roles
    if actor.principal is not None:
        doc["owner"] = {
            "name": actor.principal,
            "backend_roles": sorted(actor.roles),
            "roles": [],
            "custom_attribute_names": [],
        }
    doc.update({"access": mode, "created_time": ts, "last_updated_time": ts, HIDDEN: {"repository": repo}})
    _put(conn, "group", ident, doc, name_key=name.lower(), owner=actor.principal)
    _put(conn, "grouprepo", repo.lower(), {"group": ident})
    return ident, doc


@retrying
def register_group(store: Store, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad("model group name must not be null")
    description = body.get("description")
    with store.catalog.write() as conn:
        mode, roles = _access_fields(conn, actor, body, registering=True)
        taken = _group_by_name(conn, name)
        if taken is not None:
            raise bad(f"The name you provided is already being used by a model group with ID: {taken.id}.")
        ident, _ = _create_group(
            conn, actor, name, description if isinstance(description, str) else None, mode or "private", roles
        )
    return {"model_group_id": ident, "status": "CREATED"}


def _group(
    conn: sa.Connection, actor: Actor, ident: str, *, lock: bool = False
) -> tuple[Any, dict[str, Any]]:
    row = _row(conn, "group", ident, lock=lock)
    if row is None:
        raise MLError(404, f"Failed to find model group with the provided model group id: {ident}")
    doc = _doc(row)
    if not _may(conn, actor, doc):
        raise MLError(403, "User doesn't have privilege to perform this operation on this model group")
    return row, doc


def get_group(store: Store, actor: Actor, ident: str) -> dict[str, Any]:
    with store.catalog.read() as conn:
        return shown(_group(conn, actor, ident)[1])


@retrying
def update_group(store: Store, actor: Actor, ident: str, body: dict[str, Any]) -> dict[str, Any]:
    if not body:
        raise bad("Model group request can't be null")
    with store.catalog.write() as conn:
        row, doc = _group(conn, actor, ident, lock=True)
        wants_access = any(k in body for k in ("access_mode", "backend_roles", "add_all_backend_roles"))
        owner = (doc.get("owner") or {}).get("name")
        if wants_access and _control_on(conn) and not actor.admin and owner not in (None, actor.principal):
            raise bad("Only owner or admin can update access control data.")
        mode, roles = _access_fields(conn, actor, body, registering=False)
        name = body.get("name")
        if isinstance(name, str) and name.strip() and name.lower() != doc["name"].lower():
            taken = _group_by_name(conn, name)
            if taken is not None:
                raise bad(
                    f"The name you provided is already being used by another model with ID: {taken.id}. Please provide a different name"  # noqa: E501
                )
            doc["name"] = name
        if isinstance(body.get("description"), str):
            doc["description"] = body["description"]
        if mode is not None:
            doc["access"] = mode
            if mode != "restricted":
                doc.pop("backend_roles", None)
        if roles is not None:
            doc["backend_roles"] = roles
        doc["last_updated_time"] = millis()
        _put(conn, "group", ident, doc, name_key=doc["name"].lower(), owner=row.owner)
        repo = doc[HIDDEN]["repository"]
        conn.execute(
            t.repositories.update()
            .where(t.repositories.c.name_key == repo.lower())
            .values(visibility=_visibility(doc.get("access", "public")))
        )
    return {"status": "Updated"}


@retrying
def delete_group(store: Store, actor: Actor, ident: str) -> dict[str, Any]:
    with store.catalog.write() as conn:
        row = _row(conn, "group", ident, lock=True)
        if row is None:
            return delete_response("group", ident, 1, "not_found")
        if not _may(conn, actor, _doc(row)):
            # ML Commons answers 500 (MLValidationException); modelhangar never answers 500 to a refusal.
            raise MLError(403, "User doesn't have privilege to delete this model group")
        if _models_of(conn, ident, limit=1):
            raise MLError(409, "Cannot delete the model group when it has associated model versions")
        doc = _doc(row)
        version = _drop(conn, "group", ident)
        _drop(conn, "grouprepo", doc[HIDDEN]["repository"].lower())
    return delete_response("group", ident, version)


def _models_of(conn: sa.Connection, group: str, limit: int | None = None) -> list[str]:
    q = sa.select(t.ml_objects.c.id).where(t.ml_objects.c.kind == "model", t.ml_objects.c.parent == group)
    return [r.id for r in conn.execute(q.limit(limit) if limit else q)]


# ---------------------------------------------------------------------------------------- models


def _resolve_group(
    conn: sa.Connection, actor: Actor, body: dict[str, Any], name: str
) -> tuple[str, dict[str, Any]]:
    """The group a model registers into (locked), found by id, by the model's name, or created."""
    gid = body.get("model_group_id")
    if isinstance(gid, str) and gid:
        row = _row(conn, "group", gid, lock=True)
        if row is None:
            raise MLError(404, f"Failed to find model group with the provided model group id: {gid}")
        doc = _doc(row)
        if not _may(conn, actor, doc):
            raise bad("You don't have permissions to perform this operation on this model.")
        return gid, doc
    row = _group_by_name(conn, name)
    if row is not None:
        row = _row(conn, "group", row.id, lock=True)  # its version counter, as the id path locks it
        doc = _doc(row)
        if not _may(conn, actor, doc):
            raise bad(
                f"The name {{{name}}} you provided is unavailable because it is used by another model group "
                f"with id {{{row.id}}} to which you do not have access. Please provide a different name."
            )
        return str(row.id), doc
    mode = "private" if _control_on(conn) else "public"
    return _create_group(conn, actor, name, None, mode, None)


def _new_model(
    conn: sa.Connection, actor: Actor, body: dict[str, Any], *, state: str, function_name: str
) -> tuple[str, dict[str, Any]]:
    name = body["name"]
    gid, group = _resolve_group(conn, actor, body, name)
    group["latest_version"] = int(group.get("latest_version", 0)) + 1
    group["last_updated_time"] = millis()
    grow = _row(conn, "group", gid)
    _put(conn, "group", gid, group, name_key=group["name"].lower(), owner=grow.owner)
    ident = new_id()
    ts = millis()
    version = str(group["latest_version"])
    doc: dict[str, Any] = {
        "name": name,
        "model_group_id": gid,
        "algorithm": function_name.upper(),
        "model_version": version,
    }
    for key in (
        "description",
        "model_format",
        "model_config",
        "model_content_size_in_bytes",
        "model_content_hash_value",
        "connector_id",
        "connector",
        "is_hidden",
        "interface",
        "url",
    ):
        if body.get(key) is not None:
            doc[key] = body[key]
    if isinstance(doc.get("connector"), dict):
        doc["connector"] = {k: v for k, v in doc["connector"].items() if k != "credential"}
    doc.update(
        {"model_state": state, "created_time": ts, "last_updated_time": ts, "last_registered_time": ts}
    )
    if body.get("total_chunks") is not None:
        doc["total_chunks"] = body["total_chunks"]
    repo = group[HIDDEN]["repository"]
    doc[HIDDEN] = {
        "repository": repo,
        "tag": version,
        "owner": (group.get("owner") or {}).get("name"),
        "access": group.get("access", "public"),
    }
    _put(conn, "model", ident, doc, name_key=f"{repo}:{version}".lower(), parent=gid, owner=actor.principal)
    if isinstance(doc.get("connector_id"), str):
        _put(
            conn,
            "connector-use",
            f"{doc['connector_id']}/{ident}",
            {"model_id": ident},
            parent=doc["connector_id"],
        )
    return ident, doc


def _validate_register(body: dict[str, Any]) -> tuple[str, bool]:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad("model name is null")
    function_name = body.get("function_name") or "TEXT_EMBEDDING"
    if not isinstance(function_name, str):
        raise bad("function_name must be a string")
    remote = function_name.lower() == "remote" or bool(body.get("connector_id") or body.get("connector"))
    if not remote:
        if not body.get("model_format"):
            raise bad("model format is null")
        if (
            body.get("url")
            and not body.get("model_config")
            and not function_name.upper().startswith("SPARSE_")
        ):
            raise bad("model config is null")
    if body.get("model_content_hash_value") is not None and not re.fullmatch(
        r"[0-9a-fA-F]{64}", str(body["model_content_hash_value"])
    ):
        raise bad("model_content_hash_value must be the sha256 of the model's content, in hex")
    url = body.get("url")
    if url is not None and (not isinstance(url, str) or not re.match(r"https?://", url)):
        raise bad("URL can't match trusted url regex")
    return ("REMOTE" if remote else function_name.upper()), remote


def _task(
    conn: sa.Connection,
    task_type: str,
    function_name: str,
    state: str,
    actor: Actor,
    model_id: str | None = None,
    error: str | None = None,
) -> str:
    ident = new_id()
    ts = millis()
    doc: dict[str, Any] = {
        "task_type": task_type,
        "function_name": function_name,
        "state": state,
        "worker_node": [NODE],
        "create_time": ts,
        "last_update_time": ts,
        "is_async": True,
    }
    if model_id is not None:
        doc["model_id"] = model_id
    if error is not None:
        doc["error"] = error
    _put(conn, "task", ident, doc, parent=model_id, owner=actor.principal)
    return ident


def _finish_task(
    conn: sa.Connection, ident: str, *, state: str, model_id: str | None = None, error: str | None = None
) -> None:
    row = _row(conn, "task", ident)
    if row is None:
        return
    doc = _doc(row)
    doc["state"] = state
    doc["last_update_time"] = millis()
    if model_id is not None:
        doc["model_id"] = model_id
    if error is not None:
        doc["error"] = error
    _put(conn, "task", ident, doc, parent=row.parent, owner=row.owner)


@retrying
def _register_rows(
    store: Store,
    actor: Actor,
    body: dict[str, Any],
    function_name: str,
    remote: bool,
) -> tuple[str, str, dict[str, Any]]:
    with store.catalog.write() as conn:
        if (
            remote
            and isinstance(body.get("connector_id"), str)
            and _row(conn, "connector", body["connector_id"]) is None
        ):
            raise MLError(404, "Failed to find connector")
        model_id, doc = _new_model(
            conn, actor, body, state="REGISTERED" if remote else "REGISTERING", function_name=function_name
        )
        task_id = _task(conn, "REGISTER_MODEL", function_name, "CREATED", actor, None)
    return task_id, model_id, doc


def register_model(
    store: Store, actor: Actor, body: dict[str, Any], fetch: Callable[[str, str, str], None] | None = None
) -> dict[str, Any]:
    """`_register`: remote models at once; a `url` is fetched by `fetch(url, task_id, model_id)` (the face
    runs it in the background and calls `install_content` or `fail_task`); a pre-trained model name fails
    its task (modelhangar does not download OpenSearch's artifacts)."""
    function_name, remote = _validate_register(body)
    task_id, model_id, doc = _register_rows(store, actor, body, function_name, remote)
    if remote:
        _install(store, model_id, doc, None)
        with store.catalog.write() as conn:
            _finish_task(conn, task_id, state="COMPLETED", model_id=model_id)
        return {"task_id": task_id, "status": "CREATED", "model_id": model_id}
    url = body.get("url")
    if isinstance(url, str) and fetch is not None:
        fetch(url, task_id, model_id)
    else:
        fail_task(
            store,
            task_id,
            model_id,
            "modelhangar does not download OpenSearch's pre-trained models: register with a url or upload chunks",  # noqa: E501
        )
    return {"task_id": task_id, "status": "CREATED"}


def fail_task(store: Store, task_id: str, model_id: str, error: str) -> None:
    """A register that failed: its task says why and nothing of the model is kept."""
    with store.catalog.write() as conn:
        _forget_model(conn, model_id)
        _finish_task(conn, task_id, state="FAILED", error=error)


def install_content(store: Store, task_id: str, model_id: str, chunks: Iterable[bytes]) -> None:
    """Store fetched content as a blob (checked against its hash) and complete the register task."""
    with store.catalog.read() as conn:
        row = _row(conn, "model", model_id)
    if row is None:
        return
    try:
        _install(store, model_id, _doc(row), chunks)
    except MLError as e:
        fail_task(store, task_id, model_id, e.reason)
        return
    with store.catalog.write() as conn:
        _finish_task(conn, task_id, state="COMPLETED", model_id=model_id)


def _install(store: Store, model_id: str, doc: dict[str, Any], chunks: Iterable[bytes] | None) -> None:
    """Content (if any) as a blob, the document as the config of a manifest tagged with the version."""
    hidden = doc[HIDDEN]
    layers: list[dict[str, Any]] = []
    if chunks is not None:
        writer = store.blob_writer()
        size = 0
        try:
            for chunk in chunks:
                size += len(chunk)
                if size > MODEL_MAX:
                    raise MLError(400, "Model content size exceeds the limit of 4GB")
                writer.write(chunk)
        except BaseException:
            writer.discard()
            raise
        want = doc.get("model_content_hash_value")
        try:
            commit = store.commit_blob(writer, f"sha256:{want.lower()}" if isinstance(want, str) else None)
        except DigestMismatch:
            raise MLError(400, "model content hash can't match original hash value") from None
        layers.append({"mediaType": CONTENT_MEDIA, "digest": commit.digest, "size": commit.size})
        doc["model_content_size_in_bytes"] = commit.size
        doc["model_content_hash_value"] = commit.digest.removeprefix("sha256:")
    doc["model_state"] = "REGISTERED"
    doc["last_registered_time"] = doc["last_updated_time"] = millis()
    cfg = store.put_blob_bytes(json.dumps(shown(doc), separators=(",", ":"), sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA, "digest": cfg.digest, "size": cfg.size},
        "layers": layers,
        "annotations": {
            "org.opensearch.ml.model_id": model_id,
            "org.opensearch.ml.model_group_id": doc["model_group_id"],
        },
    }
    content = json.dumps(manifest, separators=(",", ":")).encode()
    store.put_manifest(hidden["repository"], hidden["tag"], content, OCI_MANIFEST, owner=hidden.get("owner"))
    with store.catalog.write() as conn:
        conn.execute(
            t.repositories.update()
            .where(t.repositories.c.name_key == hidden["repository"].lower())
            .values(kind=REPO_KIND, visibility=_visibility(hidden.get("access", "public")))
        )
        cur = _row(conn, "model", model_id, lock=True)
        if cur is not None:
            _put(conn, "model", model_id, doc, name_key=cur.name_key, parent=cur.parent, owner=cur.owner)


@retrying
def register_meta(store: Store, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """`_register_meta` / `meta`: a model whose content arrives in chunks."""
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad("model name is null")
    if not body.get("model_format"):
        raise bad("model format is null")
    total = body.get("total_chunks")
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise bad("total_chunks must be a positive number")
    if total * CHUNK_MAX > MODEL_MAX + CHUNK_MAX:
        raise bad("Model content size exceeds the limit of 4GB")
    _validate_register({**body, "url": None})
    function_name = str(body.get("function_name") or "TEXT_EMBEDDING").upper()
    with store.catalog.write() as conn:
        model_id, _ = _new_model(conn, actor, body, state="REGISTERING", function_name=function_name)
    return {"model_id": model_id, "status": "CREATED"}


def chunks_dir(store: Store, model_id: str) -> Path:
    return store.settings.home / "ml-chunks" / hashlib.sha256(model_id.encode()).hexdigest()[:32]


def upload_chunk(store: Store, actor: Actor, model_id: str, number: str, data: bytes) -> dict[str, Any]:
    """One chunk (raw bytes); the last one stores the content, checked against its hash (a mismatch
    keeps nothing: the model goes)."""
    with store.catalog.read() as conn:
        _, doc = _model(conn, actor, model_id)
    if not number.isdigit():
        raise bad(f"Chunk number must be a number: {number}")
    n = int(number)
    total = int(doc.get("total_chunks") or 0)
    if doc.get("model_state") != "REGISTERING" or not total:
        raise bad("Model content has been uploaded already")
    if n >= total:
        raise bad("Chunk number exceeds total chunks")
    if not data:
        raise bad("Chunk size either 0 or null")
    if len(data) > CHUNK_MAX:
        raise bad("Chunk size exceeds 10MB")
    folder = chunks_dir(store, model_id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{n}.tmp-{secrets.token_hex(4)}"
    tmp.write_bytes(data)
    tmp.replace(folder / str(n))
    if all((folder / str(i)).exists() for i in range(total)):

        def pieces() -> Iterator[bytes]:
            for i in range(total):
                yield (folder / str(i)).read_bytes()

        try:
            _install(store, model_id, doc, pieces())
        except MLError:
            with store.catalog.write() as conn:
                _forget_model(conn, model_id)
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {"status": "Uploaded"}


def _forget_model(conn: sa.Connection, model_id: str) -> int:
    """Drop a model's document; the last model of a group takes the group (the seed)."""
    row = _row(conn, "model", model_id)
    if row is None:
        return 1
    version = _drop(conn, "model", model_id)
    doc = _doc(row)
    if isinstance(doc.get("connector_id"), str):
        _drop(conn, "connector-use", f"{doc['connector_id']}/{model_id}")
    gid = row.parent
    if gid and not _models_of(conn, gid, limit=1):
        grow = _row(conn, "group", gid)
        if grow is not None:
            _drop(conn, "group", gid)
            _drop(conn, "grouprepo", _doc(grow)[HIDDEN]["repository"].lower())
    return version


def _tagged(conn: sa.Connection, hidden: dict[str, Any]) -> bool:
    """Whether a model's version is still in the store (another face may have deleted it)."""
    found = conn.execute(
        sa.select(t.tags.c.name)
        .select_from(t.tags.join(t.repositories, t.repositories.c.id == t.tags.c.repository_id))
        .where(
            t.repositories.c.name_key == hidden["repository"].lower(),
            t.tags.c.name_key == hidden["tag"].lower(),
        )
    ).first()
    return found is not None


def _model(
    conn: sa.Connection, actor: Actor, model_id: str, missing: str = "Failed to find model"
) -> tuple[Any, dict[str, Any]]:
    row = _row(conn, "model", model_id)
    if row is None:
        raise MLError(404, missing)
    doc = _doc(row)
    if doc.get("model_state") != "REGISTERING" and not _tagged(conn, doc[HIDDEN]):
        raise MLError(404, "Failed to find model")  # deleted through another face (`hangar rm`)
    group = _row(conn, "group", row.parent) if row.parent else None
    if not _may(conn, actor, _doc(group) if group is not None else None):
        raise MLError(403, "User doesn't have privilege to perform this operation on this model")
    return row, doc


def get_model(store: Store, actor: Actor, model_id: str) -> dict[str, Any]:
    with store.catalog.read() as conn:
        missing = f"Failed to find model with the provided model id: {model_id}"
        return shown(_model(conn, actor, model_id, missing)[1])


def _set_state(store: Store, actor: Actor, model_id: str, state: str, stamp: str, task_type: str) -> str:
    with store.catalog.write() as conn:
        row, doc = _model(conn, actor, model_id)
        if doc.get("model_state") == "REGISTERING":
            raise bad(f"Model {model_id} is still being registered: upload all its chunks first")
        doc["model_state"] = state
        doc[stamp] = doc["last_updated_time"] = millis()
        _put(conn, "model", model_id, doc, name_key=row.name_key, parent=row.parent, owner=row.owner)
        return _task(
            conn, task_type, str(doc.get("algorithm", "TEXT_EMBEDDING")), "COMPLETED", actor, model_id
        )


def deploy(store: Store, actor: Actor, model_id: str) -> dict[str, Any]:
    """Recorded at once (nothing is run): DEPLOYED, with a completed deploy task."""
    task_id = _set_state(store, actor, model_id, "DEPLOYED", "last_deployed_time", "DEPLOY_MODEL")
    return {"task_id": task_id, "task_type": "DEPLOY_MODEL", "status": "CREATED"}


def undeploy(store: Store, actor: Actor, model_ids: list[str]) -> dict[str, Any]:
    """Recorded at once, so a delete right after it works (ml-commons #2419)."""
    stats: dict[str, str] = {}
    for model_id in model_ids:
        _set_state(store, actor, model_id, "UNDEPLOYED", "last_undeployed_time", "UNDEPLOY_MODEL")
        stats[model_id] = "UNDEPLOYED"
    return {NODE: {"stats": stats}} if stats else {}


def _safe_delete_message(blocked: dict[str, list[str]]) -> list[str]:
    out = []
    if blocked.get("ingest pipeline"):
        ids = blocked["ingest pipeline"]
        out.append(
            f"{len(ids)} ingest pipelines are still using this model, please delete or update the pipelines first: [{', '.join(ids)}]"  # noqa: E501
        )
    if blocked.get("search pipeline"):
        ids = blocked["search pipeline"]
        out.append(
            f"{len(ids)} search pipelines are still using this model, please delete or update the pipelines first: [{', '.join(ids)}]"  # noqa: E501
        )
    if blocked.get("agent"):
        ids = blocked["agent"]
        out.append(
            f"{len(ids)} agents are still using this model, please delete or update the agents first, all visible agents are: [{', '.join(ids)}]"  # noqa: E501
        )
    return out


def delete_model(store: Store, actor: Actor, model_id: str) -> dict[str, Any]:
    """ML Commons' delete: not found 404, no access 403, deployed 400, then the planner (whose
    `setting:` dependents refuse it while safe delete is on: 409 naming every kind at once)."""
    try:
        with store.catalog.read() as conn:
            _, doc = _model(conn, actor, model_id)
    except MLError as e:
        if e.status == 404:  # a version another face deleted: its document goes too
            with store.catalog.write() as conn:
                _forget_model(conn, model_id)
        raise
    state = doc.get("model_state")
    if state in DEPLOYED_STATES:
        raise MLError(
            400,
            "Model cannot be deleted in deploying or deployed state. Try undeploy model first then delete",
        )
    hidden = doc[HIDDEN]
    if state != "REGISTERING":  # `_model` found its version in the store
        plan = Planner(store).delete([Target("tag", hidden["repository"], hidden["tag"])], admin_as(actor))
        if not plan.executed:
            blocked: dict[str, list[str]] = {}
            others: list[str] = []
            for b in plan.blockers:
                if b.kind in DEPENDENT_KINDS.values():
                    blocked.setdefault(b.kind, []).append(b.id)
                else:
                    others.append(b.reason)
            causes = _safe_delete_message(blocked) + others
            if not causes:
                raise MLError(404, "Failed to find model")
            raise MLError(409, ". ".join(causes), causes=causes)
    with store.catalog.write() as conn:
        version = _forget_model(conn, model_id)
    shutil.rmtree(chunks_dir(store, model_id), ignore_errors=True)
    return delete_response("model", model_id, version)


# ---------------------------------------------------------------------------------------- tasks


def get_task(store: Store, actor: Actor, task_id: str) -> dict[str, Any]:
    with store.catalog.read() as conn:
        row = _row(conn, "task", task_id)
    if row is None or not (actor.admin or row.owner in (None, actor.principal)):
        raise MLError(404, "Failed to find task")
    return {"task_id": task_id, **_doc(row)}


def delete_task(store: Store, actor: Actor, task_id: str) -> dict[str, Any]:
    with store.catalog.write() as conn:
        row = _row(conn, "task", task_id)
        if row is None or not (actor.admin or row.owner in (None, actor.principal)):
            raise MLError(404, "Failed to find task")
        version = _drop(conn, "task", task_id)
    return delete_response("task", task_id, version)


# ---------------------------------------------------------------------------------------- connectors


def create_connector(store: Store, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    for key in ("name", "protocol"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise bad(f"Connector {key} can't be null")
    ident = new_id()
    ts = millis()
    doc = {**body, "created_time": ts, "last_updated_time": ts}
    with store.catalog.write() as conn:
        _put(conn, "connector", ident, doc, owner=actor.principal)
    return {"connector_id": ident}


def _connector(conn: sa.Connection, actor: Actor, ident: str) -> Any:
    row = _row(conn, "connector", ident)
    if row is None:
        raise MLError(404, "Failed to find connector")
    if not (actor.admin or row.owner in (None, actor.principal) or not _control_on(conn)):
        raise MLError(403, "You don't have permission to access this connector")
    return row


def get_connector(store: Store, actor: Actor, ident: str) -> dict[str, Any]:
    with store.catalog.read() as conn:
        doc = _doc(_connector(conn, actor, ident))
    doc.pop("credential", None)
    return doc


def delete_connector(store: Store, actor: Actor, ident: str) -> dict[str, Any]:
    with store.catalog.write() as conn:
        _connector(conn, actor, ident)
        users = [
            _doc(r)["model_id"]
            for r in conn.execute(
                sa.select(t.ml_objects).where(
                    t.ml_objects.c.kind == "connector-use", t.ml_objects.c.parent == ident
                )
            )
        ]
        if users:
            raise MLError(
                409,
                f"{len(users)} models are still using this connector, please delete or update the models first: [{', '.join(users)}]",  # noqa: E501
            )
        version = _drop(conn, "connector", ident)
    return delete_response("connector", ident, version)


# ---------------------------------------------------------------------------------------- users of models


def _walk(value: Any, keys: frozenset[str], out: set[str], key: str | None = None) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "neural_field_default_id" and "neural_field_default_id" in keys and isinstance(v, dict):
                out.update(x for x in v.values() if isinstance(x, str))
            else:
                _walk(v, keys, out, k)
    elif isinstance(value, list):
        for v in value:
            _walk(v, keys, out, key)
    elif isinstance(value, str) and key in keys:
        out.add(value)


PIPELINE_KEYS = {
    "ingest": frozenset({"model_id"}),
    # Upstream misses these two (reference point 3): modelhangar counts them.
    "search": frozenset({"model_id", "default_model_id", "neural_field_default_id"}),
}
AGENT_TOOL_KEYS = frozenset({"model_id", "inference_model_id", "embedding_model_id"})


def models_used(kind: str, body: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    if kind == "agent":
        for tool in body.get("tools") or ():
            if isinstance(tool, dict):
                _walk(tool.get("parameters") or {}, AGENT_TOOL_KEYS, found)
        llm = body.get("llm")
        if isinstance(llm, dict) and isinstance(llm.get("model_id"), str):
            found.add(llm["model_id"])  # upstream does not count it (reference point 3)
    else:
        _walk(body, PIPELINE_KEYS[kind], found)
    return found


def _record_users(
    conn: sa.Connection, kind: str, ident: str, body: dict[str, Any], owner: str | None
) -> None:
    label = DEPENDENT_KINDS[kind]
    dependents.forget(conn, label, ident)
    for model_id in sorted(models_used(kind, body)):
        row = _row(conn, "model", model_id)
        if row is None:
            continue  # a model this store does not know cannot be deleted here
        hidden = _doc(row)[HIDDEN]
        dependents.record(
            conn,
            label,
            ident,
            "tag",
            f"{hidden['repository']}:{hidden['tag']}",
            reason=f"{label} {ident} uses model {model_id}",
            owner=owner,
            policy=f"setting:{SAFE_DELETE}",
        )


@retrying
def put_pipeline(store: Store, actor: Actor, kind: str, ident: str, body: dict[str, Any]) -> dict[str, Any]:
    processors = (
        body.get("request_processors", body.get("processors")) if kind == "search" else body.get("processors")
    )
    if kind == "ingest" and not isinstance(processors, list):
        raise MLError(400, "[processors] required property is missing", "parse_exception")
    with store.catalog.write() as conn:
        _put(conn, kind, ident, body, owner=actor.principal)
        _record_users(conn, kind, ident, body, actor.principal)
    return {"acknowledged": True}


def get_pipelines(store: Store, kind: str, ident: str | None) -> dict[str, Any]:
    with store.catalog.read() as conn:
        if ident is None or ident in ("*", "_all"):
            rows = conn.execute(
                sa.select(t.ml_objects).where(t.ml_objects.c.kind == kind).order_by(t.ml_objects.c.id)
            )
            return {r.id: _doc(r) for r in rows}
        out = {}
        for part in ident.split(","):
            row = _row(conn, kind, part)
            if row is not None:
                out[part] = _doc(row)
    if not out:
        raise MLError(404, f"pipeline [{ident}] is missing", "resource_not_found_exception")
    return out


@retrying
def delete_pipeline(store: Store, kind: str, ident: str) -> dict[str, Any]:
    with store.catalog.write() as conn:
        if _row(conn, kind, ident) is None:
            raise MLError(404, f"pipeline [{ident}] is missing", "resource_not_found_exception")
        _drop(conn, kind, ident)
        dependents.forget(conn, DEPENDENT_KINDS[kind], ident)
    return {"acknowledged": True}


AGENT_TYPES = (
    "flow",
    "conversational",
    "conversational_flow",
    "plan_execute_and_reflect",
    "ag_ui",
    "conversational_v2",
)


@retrying
def register_agent(store: Store, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(body.get("name"), str) or not body["name"]:
        raise bad("Agent name can't be null")
    if body.get("type") not in AGENT_TYPES:
        raise bad(f"Wrong Agent type: {body.get('type')}")
    if body["type"] == "conversational" and not isinstance(body.get("llm"), dict):
        raise bad("We need model information for the conversational agent type")
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(x, dict) and x.get("type") for x in tools):
        raise bad("tool type is null")
    names = [x.get("name") or x["type"] for x in tools]
    if len(set(names)) != len(names):
        raise bad("Duplicate tool defined in agent configuration")
    ident = new_id()
    ts = millis()
    doc = {**body, "created_time": ts, "last_updated_time": ts}
    with store.catalog.write() as conn:
        _put(conn, "agent", ident, doc, owner=actor.principal)
        _record_users(conn, "agent", ident, body, actor.principal)
    return {"agent_id": ident}


def get_agent(store: Store, ident: str) -> dict[str, Any]:
    with store.catalog.read() as conn:
        row = _row(conn, "agent", ident)
    if row is None:
        raise MLError(404, "Failed to find agent with the provided agent id: " + ident)
    return _doc(row)


@retrying
def delete_agent(store: Store, ident: str) -> dict[str, Any]:
    with store.catalog.write() as conn:
        if _row(conn, "agent", ident) is None:
            raise MLError(404, "Failed to find agent with the provided agent id: " + ident)
        version = _drop(conn, "agent", ident)
        dependents.forget(conn, DEPENDENT_KINDS["agent"], ident)
    return delete_response("agent", ident, version)


# ---------------------------------------------------------------------------------------- search


def _values(doc: Any, field: str) -> list[Any]:
    field = field.removesuffix(".keyword")
    node: list[Any] = [doc]
    for part in field.split("."):
        nxt: list[Any] = []
        for n in node:
            if isinstance(n, dict) and part in n:
                v = n[part]
                nxt.extend(v if isinstance(v, list) else [v])
        node = nxt
    return node


def _tokens(value: Any) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", str(value).lower()))


def _one(spec: Any, what: str) -> tuple[str, Any]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise MLError(400, f"[{what}] query malformed, no start_object after query name", "parsing_exception")
    return next(iter(spec.items()))


QUERIES = frozenset({"match_all", "bool", "ids", "exists", "term", "terms", "match", "match_phrase", "range"})


def matches(doc: dict[str, Any], ident: str, query: Any) -> bool:
    """The query subset clients use: match_all, term, terms, match, bool, exists, ids, range."""
    name, spec = _one(query, "query")
    if name not in QUERIES:
        raise MLError(400, f"unknown query [{name}]", "parsing_exception")
    if name == "match_all":
        return True
    if name == "bool":
        if not isinstance(spec, dict):
            raise MLError(400, "[bool] query malformed", "parsing_exception")

        def clauses(key: str) -> list[Any]:
            c = spec.get(key) or []
            return c if isinstance(c, list) else [c]

        must = clauses("must") + clauses("filter")
        should = clauses("should")
        if not all(matches(doc, ident, q) for q in must):
            return False
        if any(matches(doc, ident, q) for q in clauses("must_not")):
            return False
        if should:
            need = int(spec.get("minimum_should_match", 0 if must else 1))
            return sum(matches(doc, ident, q) for q in should) >= need
        return True
    if name == "ids":
        return ident in (spec.get("values") or []) if isinstance(spec, dict) else False
    if name == "exists":
        return bool(isinstance(spec, dict) and _values(doc, str(spec.get("field", ""))))
    field, value = _one(spec, name)
    got = [ident] if field == "_id" else _values(doc, field)
    if name == "term":
        want = value.get("value") if isinstance(value, dict) else value
        return any(g == want or str(g) == str(want) for g in got)
    if name == "terms":
        wants = value if isinstance(value, list) else []
        return any(str(g) == str(w) for g in got for w in wants)
    if name in ("match", "match_phrase"):
        text = value.get("query") if isinstance(value, dict) else value
        want_tokens = _tokens(text)
        return any(
            want_tokens and (want_tokens & _tokens(g) if name == "match" else want_tokens <= _tokens(g))
            for g in got
        )
    if name == "range":
        if not isinstance(value, dict):
            return False
        for g in got:
            try:
                ok = all(
                    {"gt": g > b, "gte": g >= b, "lt": g < b, "lte": g <= b}.get(op, True)
                    for op, b in value.items()
                )
            except TypeError:
                continue
            if ok:
                return True
        return False
    raise MLError(400, f"unknown query [{name}]", "parsing_exception")


def _source(doc: dict[str, Any], spec: Any) -> dict[str, Any] | None:
    if spec is None or spec is True:
        return doc
    if spec is False:
        return None
    includes: list[str] = []
    excludes: list[str] = []
    if isinstance(spec, str):
        includes = [spec]
    elif isinstance(spec, list):
        includes = [str(x) for x in spec]
    elif isinstance(spec, dict):
        inc, exc = (
            spec.get("includes", spec.get("include", [])),
            spec.get("excludes", spec.get("exclude", [])),
        )
        includes = [inc] if isinstance(inc, str) else list(inc or [])
        excludes = [exc] if isinstance(exc, str) else list(exc or [])

    def hit(key: str, pats: list[str]) -> bool:
        return any(
            re.fullmatch(re.escape(p).replace(r"\*", ".*"), key) or p.startswith(key + ".") for p in pats
        )

    out = {k: v for k, v in doc.items() if (not includes or hit(k, includes)) and not hit(k, excludes)}
    return out


def _sort_key(spec: Any) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for item in spec if isinstance(spec, list) else [spec]:
        if isinstance(item, str):
            out.append((item, False))
        elif isinstance(item, dict):
            for field, how in item.items():
                order = how.get("order", "asc") if isinstance(how, dict) else how
                out.append((field, str(order).lower() == "desc"))
    return out


SEARCH_KIND = {"group": "group", "model": "model", "task": "task", "connector": "connector", "agent": "agent"}


def search(store: Store, actor: Actor, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenSearch SearchResponse over one kind of document (the query subset of `matches`)."""
    try:
        return _search(store, actor, kind, body)
    except (TypeError, ValueError, AttributeError) as e:  # a malformed query: 400, never 500
        raise MLError(400, f"failed to parse the search request: {e}", "parsing_exception") from None


def _live_models() -> Any:
    """Model documents whose version is still in the store (or still registering): a version deleted
    through another face stays out of `_search` and comes back if restored from the trash."""
    r, g = t.repositories.c, t.tags.c
    live = (
        sa.select(r.name_key + ":" + g.name_key)
        .select_from(t.tags.join(t.repositories, r.id == g.repository_id))
        .where(r.kind == REPO_KIND)
    )
    registering = t.ml_objects.c.doc.contains(json.dumps({"model_state": "REGISTERING"})[1:-1])
    return sa.or_(t.ml_objects.c.name_key.in_(live), registering)


def _visible_to(conn: sa.Connection, actor: Actor, kind: str) -> Callable[[Any], bool]:
    """Which rows of `kind` a non-admin sees with access control on, asked of the row before its
    document is parsed: models and groups by their group's rule (`_group_allows`, each group read
    once), tasks, connectors and agents by their owner."""
    if kind not in ("model", "group"):
        return lambda row: row.owner in (None, actor.principal)
    o = t.ml_objects.c
    groups = conn.execute(sa.select(o.id, o.doc).where(o.kind == "group"))
    denied = {g.id for g in groups if not _group_allows(actor, json.loads(g.doc))}
    return lambda row: (row.id if kind == "group" else row.parent) not in denied


def _search(store: Store, actor: Actor, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    query = body.get("query", {"match_all": {}})
    size, offset = body.get("size", 10), body.get("from", 0)
    if not isinstance(size, int) or not isinstance(offset, int) or size < 0 or offset < 0:
        raise MLError(400, "[size] and [from] must be non-negative numbers", "parsing_exception")
    size = min(size, 10_000)
    sort = _sort_key(body["sort"]) if body.get("sort") is not None else []
    matches({}, "", query)  # a malformed query is refused even when there is nothing to match
    _source({"a": 1}, body.get("_source"))
    o = t.ml_objects
    with store.catalog.read() as conn:
        control = _control_on(conn) and not actor.admin
        base = sa.select(o).where(o.c.kind == kind)
        counted = sa.select(sa.func.count()).select_from(o).where(o.c.kind == kind)
        if kind == "model":  # a version another face deleted is gone from this listing too (README)
            base, counted = base.where(_live_models()), counted.where(_live_models())
        simple = query == {"match_all": {}} and not sort and not control
        if simple:  # one indexed count and one page: no walk over every document
            total = int(conn.execute(counted).scalar() or 0)
            rows = list(conn.execute(base.order_by(o.c.id).offset(offset).limit(size)))
            found = [(r, _doc(r)) for r in rows]
        else:
            visible = _visible_to(conn, actor, kind) if control else lambda row: True
            ordered = conn.execute(base.order_by(o.c.created_at, o.c.id))
            every = [(r, _doc(r)) for r in ordered if visible(r)]
            hits = [(r, d) for r, d in every if matches(shown(d), r.id, query)]
            for field, desc in reversed(sort):
                if field == "_score":
                    continue
                hits.sort(
                    key=lambda x: (str(_values(x[1], field)[:1]),) if field != "_id" else (x[0].id,),
                    reverse=desc,
                )
            total = len(hits)
            found = hits[offset : offset + size]
    out = []
    for row, doc in found:
        src = shown(doc)
        src.pop("model_content", None)
        src.pop("credential", None)
        if kind == "task":
            src = {"task_id": row.id, **src}
        hit: dict[str, Any] = {
            "_index": INDEX[kind],
            "_id": row.id,
            "_version": int(row.seq),
            "_seq_no": int(row.seq),
            "_primary_term": 1,
            "_score": 1.0,
        }
        picked = _source(src, body.get("_source"))
        if picked is not None:
            hit["_source"] = picked
        out.append(hit)
    return {
        "took": 1,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": total, "relation": "eq"}, "max_score": 1.0 if out else None, "hits": out},
    }


# ---------------------------------------------------------------------------------------- other faces


@model_rules.rule(REPO_KIND)
def _deployed_models_stay(
    conn: sa.Connection, removal: model_rules.Removal
) -> list[model_rules.BlockerTuple]:
    """A deployed model is not deleted from any face (undeploy it first), as ML Commons refuses."""
    q = sa.select(t.tags.c.name).where(t.tags.c.repository_id == removal.repository.id)
    if not removal.whole:
        q = q.where(t.tags.c.manifest_digest.in_(sorted(removal.manifests)))
    keys = [f"{removal.repository.name}:{r.name}".lower() for r in conn.execute(q)]
    if not keys:
        return []
    out: list[model_rules.BlockerTuple] = []
    for row in conn.execute(
        sa.select(t.ml_objects).where(t.ml_objects.c.kind == "model", t.ml_objects.c.name_key.in_(keys))
    ):
        if _doc(row).get("model_state") in DEPLOYED_STATES:
            out.append(
                (
                    "deployed",
                    row.id,
                    "Model cannot be deleted in deploying or deployed state. Try undeploy model first then delete",  # noqa: E501
                )
            )
    return out
