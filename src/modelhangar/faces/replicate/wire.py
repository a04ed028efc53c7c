"""Replicate's JSON shapes and its RFC 9457 problem details (`title`, `detail`, `status`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from modelhangar.core.replicate_models import Deployment, Model, Page, Run, Version

PROBLEM = "application/problem+json"


def problem(status: int, title: str | None, detail: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "status": status}
    if title is not None:
        body = {"title": title, **body}
    return JSONResponse({**body, **extra}, status_code=status, media_type=PROBLEM)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def root(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def version_json(v: Version) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": v.id,
        "created_at": iso(v.created_at),
        "cog_version": v.cog_version,
        "openapi_schema": v.openapi_schema,
    }
    if v.training_id is not None:  # modelhangar's lineage (the client ignores keys it does not know)
        out["training"] = v.training_id
        out["base_version"] = v.base_version
    return out


def model_json(request: Request, m: Model) -> dict[str, Any]:
    return {
        "url": f"{root(request)}/v1/models/{m.owner}/{m.name}",
        "owner": m.owner,
        "name": m.name,
        "description": m.meta.get("description"),
        "visibility": m.visibility,
        "github_url": m.meta.get("github_url"),
        "paper_url": m.meta.get("paper_url"),
        "license_url": m.meta.get("license_url"),
        "cover_image_url": m.meta.get("cover_image_url"),
        "hardware": m.meta.get("hardware"),
        "run_count": m.run_count,
        "default_example": None,
        "latest_version": None if m.latest_version is None else version_json(m.latest_version),
        "created_at": iso(m.created_at),
        "is_official": False,
    }


def page_json(request: Request, page: Page, path: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    nxt = None if page.next_cursor is None else f"{root(request)}{path}?cursor={page.next_cursor}"
    return {"next": nxt, "previous": None, "results": items}


def account_json(kind: str, username: str, name: str) -> dict[str, Any]:
    return {"type": kind, "username": username, "name": name, "github_url": None, "avatar_url": None}


def run_json(request: Request, r: Run) -> dict[str, Any]:
    kind = "predictions" if r.kind == "prediction" else "trainings"
    base = f"{root(request)}/v1/{kind}/{r.id}"
    out: dict[str, Any] = {
        "id": r.id,
        "model": r.model,
        "version": r.version,
        "input": r.input,
        "output": r.output,
        "logs": r.logs,
        "error": r.error,
        "status": r.status,
        "metrics": r.metrics if isinstance(r.metrics, dict) else {},
        "created_at": iso(r.created_at),
        "started_at": iso(r.started_at),
        "completed_at": iso(r.completed_at),
        "data_removed": False,
        "source": "api",
        "urls": {"get": base, "cancel": f"{base}/cancel", "web": base},
    }
    if r.kind == "training":
        out["destination"] = r.destination
    elif r.deployment is not None:
        out["deployment"] = r.deployment
    return out


def deployment_json(d: Deployment) -> dict[str, Any]:
    return {
        "owner": d.owner,
        "name": d.name,
        "current_release": {
            "number": d.release,
            "model": d.model,
            "version": d.version,
            "created_at": iso(d.released_at),
            "created_by": account_json("user", d.created_by, d.created_by),
            "configuration": {
                "hardware": d.hardware,
                "min_instances": d.min_instances,
                "max_instances": d.max_instances,
            },
        },
    }
