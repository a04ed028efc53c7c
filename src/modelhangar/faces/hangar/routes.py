"""Routes of modelhangar's own API; shapes are documented in the OpenAPI schema at `/docs`.

Every client error is a 400 (or 404, 409, ...) with `{"detail": ...}`: a string, or for a body
or query that fails validation, the list of what failed; the schema declares exactly that. Bodies
are read with the server's one JSON reader (`core/jsonsafe.py`) and validated strictly (a boolean
is `true` or `false`, not `"yes"`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from modelhangar.auth import actor_of
from modelhangar.core import gc, jsonsafe, permissions, trash
from modelhangar.core.audit import list_audit
from modelhangar.core.config import parse_duration
from modelhangar.core.deletion import ModelDeletion, delete_models
from modelhangar.core.errors import Conflict, Denied, NotFound, not_in_trash
from modelhangar.core.names import NAME_PATTERN, InvalidName, parse_name
from modelhangar.core.retention import RetentionPolicy, prune
from modelhangar.core.store import Actor, Store
from modelhangar.core.usage import CATEGORIES, disk_usage
from modelhangar.faces.ollama.wire import display, display_plan, timestamp

FACE = "hangar"
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))*[0-9]+(\.[0-9]+)?(ms|s|m|h|d|w)?$"
"""What `parse_duration` reads, as the schema states it: `90`, `30m`, `1h30m`, `7d`."""
MAX_AUDIT = 100_000


class ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every client error: a message, or what failed validation."""

    detail: str | list[ValidationItem]


def validation_items(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors as `ValidationItem`s: no `input` or `ctx`, which may hold bytes or
    objects no JSON encoder takes (a `text/plain` body, an exception)."""
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


class _JsonSafeRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = jsonsafe.loads(await self.body())
            except jsonsafe.InvalidJSON as e:  # FastAPI answers it as a validation error
                raise json.JSONDecodeError(str(e), "", 0) from None
        return self._json


class _JsonSafeRoute(APIRoute):
    """Routes whose JSON bodies go through `core/jsonsafe.py` (depth, surrogates, constants)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_JsonSafeRequest(request.scope, request.receive))

        return route


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)


def _integral(value: Any) -> Any:
    """JSON Schema's integers include `3.0`; strict validation would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Count = Annotated[int, Field(ge=0), BeforeValidator(_integral)]
"""A non-negative JSON integer."""


router = APIRouter(
    prefix="/api/hangar",
    tags=["hangar"],
    route_class=_JsonSafeRoute,
    responses={"4XX": {"model": ErrorBody, "description": "Bad request, not found or refused"}},
)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _actor(request: Request) -> Actor:
    return actor_of(request, FACE)


def _admin(request: Request) -> Actor:
    """The actor, who must be an admin (`permissions.check_admin`; 403 otherwise)."""
    actor = _actor(request)
    try:
        permissions.check_admin(actor)
    except Denied as e:
        raise HTTPException(403, str(e)) from e
    return actor


class DeleteRequest(Strict):
    models: list[str] = Field(description="Model names, e.g. `llama3.2` or `ns/model:tag`.")
    dry_run: bool = Field(False, description="Only say what would be deleted and freed; change nothing.")
    purge: bool = Field(False, description="Skip the trash: delete at once.")


def _results(results: list[ModelDeletion]) -> dict[str, Any]:
    out = []
    for r in results:
        d = r.to_dict()
        d["plan"] = display_plan(d["plan"])
        out.append(d)
    return {"ok": all(r.ok for r in results), "results": out}


@router.post("/delete", summary="Delete (or preview deleting) several models, one result per model")
async def delete(request: Request, body: DeleteRequest) -> dict[str, Any]:
    results = await run_in_threadpool(
        delete_models, _store(request), body.models, _actor(request), dry_run=body.dry_run, purge=body.purge
    )
    return _results(results)


def _duration(text: str | None, field: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as e:
        raise HTTPException(400, f"{field}: {e}") from e


_DURATION_SCHEMA: dict[str, JsonValue] = {"type": "string", "pattern": DURATION}
_CRITERIA: dict[str, JsonValue] = {
    "older_than": _DURATION_SCHEMA,
    "unused_for": _DURATION_SCHEMA,
    "keep_last": {"type": "integer", "minimum": 0},
    "untagged_for": _DURATION_SCHEMA,
}


class PruneRequest(Strict):
    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "description": "At least one of older_than, unused_for, keep_last and untagged_for is required.",
            "anyOf": [{"required": [k], "properties": {k: v}} for k, v in _CRITERIA.items()],
        },
    )
    older_than: str | None = Field(
        None, pattern=DURATION, description="Only models modified longer ago than this, e.g. `30d`."
    )
    unused_for: str | None = Field(
        None, pattern=DURATION, description="Only models not pulled, shown or used for this long."
    )
    keep_last: Count | None = Field(
        None, description="Keep the N most recently modified tags per repository."
    )
    untagged_for: str | None = Field(
        None,
        pattern=DURATION,
        description="Also delete manifests untagged this long (pullable by digest only).",
    )
    match: str = Field("*", description="A glob over model names, e.g. `scratch-*`.")
    dry_run: bool = False
    purge: bool = Field(False, description="Skip the trash.")


@router.post("/prune", summary="Delete the models a retention policy selects, one result per model")
async def prune_models(request: Request, body: PruneRequest) -> dict[str, Any]:
    try:
        policy = RetentionPolicy(
            match=body.match,
            older_than=_duration(body.older_than, "older_than"),
            unused_for=_duration(body.unused_for, "unused_for"),
            keep_last=body.keep_last,
            untagged_for=_duration(body.untagged_for, "untagged_for"),
        )
    except ValueError as e:
        raise HTTPException(400, str(e)) from e
    results = await run_in_threadpool(
        prune, _store(request), policy, _actor(request), dry_run=body.dry_run, purge=body.purge
    )
    return _results(results)


class EmptyTrashRequest(Strict):
    older_than: str | None = Field(
        None, pattern=DURATION, description="Only entries deleted longer ago than this; all when null."
    )
    dry_run: bool = False


@router.post("/trash/empty", summary="Purge trash entries now (or preview it)")
async def trash_empty(request: Request, body: EmptyTrashRequest) -> dict[str, Any]:
    plans = await run_in_threadpool(
        trash.empty_trash,
        _store(request),
        _actor(request),
        older_than=_duration(body.older_than, "older_than"),
        dry_run=body.dry_run,
    )
    shown = [display_plan(p.to_dict()) for p in plans]
    return {
        "ok": all(p.ok for p in plans),
        "purged": [m for p in shown if p for m in p["models"]],
        "blobs": [b for p in plans for b in p.blobs],
        "bytes_freed": sum(p.bytes_freed for p in plans),
        "plans": shown,
    }


@router.get("/audit", summary="The audit log, newest first")
async def audit_log(
    request: Request,
    since: str | None = Query(
        None, pattern=DURATION, description="Only entries newer than this duration, e.g. `1h`."
    ),
    limit: int = Query(1000, ge=1, le=MAX_AUDIT, description="At most this many entries."),
) -> dict[str, Any]:
    seconds = _duration(since, "since")
    actor = _actor(request)
    entries = await run_in_threadpool(
        lambda: list_audit(
            _store(request),
            since=None if seconds is None else time.time() - seconds,
            limit=limit,
            actor=actor,
        )
    )
    return {"entries": [e.to_dict() for e in entries]}


@router.get("/models", summary="Models with their total and unique (freed-by-delete) sizes")
async def models(request: Request) -> dict[str, Any]:
    store, actor = _store(request), _actor(request)
    usage = await run_in_threadpool(
        lambda: disk_usage(store, with_sharers=False, scan_files=False, actor=actor)
    )
    records = {
        (r.repository, r.tag): r for r in await run_in_threadpool(lambda: store.list_tags(actor=actor))
    }
    out = []
    for m in usage.models:
        rec = records.get((m.repository, m.tag))
        out.append(
            {
                "model": display(m.repository, m.tag),
                "digest": m.manifest_digest.removeprefix("sha256:"),
                "size": m.size,
                "unique_size": m.unique_size,
                "modified_at": timestamp(rec.modified_at) if rec else None,
            }
        )
    return {"models": out}


@router.get("/du", summary="Disk usage per model, and every byte of the store explained")
async def du(
    request: Request,
    offset: int = Query(0, ge=0, description="Skip this many models (sorted by name)."),
    limit: int | None = Query(None, ge=1, description="At most this many models; all when absent."),
) -> JSONResponse:
    actor = _actor(request)
    usage = await run_in_threadpool(
        lambda: disk_usage(_store(request), offset=offset, limit=limit, actor=actor)
    )
    # Encoded directly: FastAPI's generic encoder walks 10,000 models' dicts several times over.
    return JSONResponse(
        {
            "models": [
                {
                    "model": display(m.repository, m.tag),
                    "size": m.size,
                    "unique_size": m.unique_size,
                    "shared_size": m.shared_size,
                    "shared_with_count": m.shared_with_count,
                    "shared_with": [display(*s.rsplit(":", 1)) for s in m.shared_with],
                }
                for m in usage.models
            ],
            "model_count": usage.model_count,
            "offset": offset,
            "breakdown": usage.breakdown,
            "categories": CATEGORIES,
            "waiting_until": usage.waiting_until,
            "trash": usage.trash_size,
            "total": usage.total,
            "blobs": usage.blob_count,
        }
    )


class GCRequest(Strict):
    dry_run: bool = False


@router.post("/gc", summary="Run garbage collection now (or preview it)")
async def run_gc(request: Request, body: GCRequest) -> dict[str, Any]:
    actor = _admin(request)  # GC is the whole store's
    report = await run_in_threadpool(gc.collect, _store(request), dry_run=body.dry_run, actor=actor)
    return report.to_dict()


@router.get("/trash", summary="Deleted models still restorable")
async def trash_list(request: Request) -> dict[str, Any]:
    entries = await run_in_threadpool(trash.list_trash, _store(request), _actor(request))
    return {
        "entries": [
            {**e.to_dict(), "model": display(e.repository, e.tag) if e.tag else e.repository} for e in entries
        ]
    }


class RestoreRequest(Strict):
    model: str = Field(min_length=1, description="A trash entry id, or the model name it was deleted under.")
    as_name: str | None = Field(
        None,
        alias="as",
        pattern=NAME_PATTERN,
        description="Restore under this name instead (when the old one was taken again meanwhile).",
    )


@router.post("/trash/restore", summary="Restore a deleted model under its name, or another")
async def trash_restore(request: Request, body: RestoreRequest) -> dict[str, Any]:
    store, actor = _store(request), _actor(request)
    try:
        target = None if body.as_name is None else parse_name(body.as_name)
    except InvalidName as e:
        raise HTTPException(400, e.detail) from e

    def run() -> dict[str, Any]:
        entry = trash.find_entry(
            store, body.model, matches=lambda e: display(e.repository, e.tag) == body.model, actor=actor
        )
        try:
            restored = trash.restore(store, entry.id, actor, as_name=target)
        except Conflict as e:
            if target is not None:
                taken = target.display_shortest()
                raise HTTPException(409, f'model "{taken}" exists; choose another name') from e
            raise HTTPException(
                409,
                f'model "{display(entry.repository, entry.tag)}" exists again; restore it under another name'
                f" with: hangar trash restore {body.model} --as NEWNAME (or delete or rename the new one)",
            ) from e
        except Denied as e:  # restoring under a name in another account's namespace
            raise HTTPException(403, str(e)) from e
        return {"restored": display(restored.repository, restored.tag), "id": restored.id}

    try:
        return await run_in_threadpool(run)
    except NotFound as e:  # no such entry, or restored or expired meanwhile
        raise HTTPException(404, not_in_trash(_shortest(body.model))) from e


def _shortest(ident: str) -> str:
    try:
        return parse_name(ident).display_shortest()
    except InvalidName:
        return ident
