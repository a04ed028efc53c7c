"""Routes of the Replicate face under `/v1`; every error is a problem detail the client parses.

Status codes where Replicate publishes none (`../shared/reference/README.md` 4-5): 404 for a model one
may not see, 403 for a visible one that is not the caller's, 409 for a rule the model's state breaks,
each with a `detail` naming every blocker; deletes answer 204 (the client counts only 204 as success).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelhangar.auth import actor_of
from modelhangar.core import accounts, jsonsafe
from modelhangar.core import replicate_models as rm
from modelhangar.core.errors import (
    Conflict,
    Denied,
    NotFound,
    QuotaExceeded,
    Refused,
    Unauthenticated,
    Unavailable,
)
from modelhangar.core.store import Actor, Store
from modelhangar.faces.replicate.wire import (
    account_json,
    deployment_json,
    model_json,
    page_json,
    problem,
    run_json,
    version_json,
)

log = logging.getLogger("modelhangar.replicate")
FACE = "replicate"
Handler = Callable[[Request], Awaitable[Response]]
MAX_QUERY = 1000


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _actor(request: Request) -> Actor:
    return actor_of(request, FACE)


def refusal_detail(what: str, blockers: list[Any]) -> str:
    """`Cannot delete …: <rule>: <every blocker>` grouped by kind, e.g. `2 versions remain: a1b2…, c3d4…`."""
    parts: list[str] = []
    versions = [b.id for b in blockers if b.kind == "version"]
    if versions:
        n = len(versions)
        shown = ", ".join(v[:12] + "…" for v in versions)
        parts.append(f"{n} version{'s' if n != 1 else ''} remain{'s' if n == 1 else ''}: {shown}")
    for b in blockers:
        if b.kind != "version":
            parts.append(
                b.reason if b.kind in ("permission", "visibility") else f"{b.kind} {b.id}: {b.reason}"
            )
    return f"Cannot delete {what}: " + "; ".join(parts)


def _refused(e: Refused) -> Response:
    plan: Any = e.plan
    blockers = list(plan.blockers)
    status = 403 if any(b.kind == "permission" for b in blockers) else 409
    what = str(e).removeprefix("refused to delete ")
    return problem(
        status,
        "Forbidden" if status == 403 else "Conflict",
        refusal_detail(what, blockers),
        blockers=[{"kind": b.kind, "id": b.id, "reason": b.reason} for b in blockers],
    )


def _map(exc: Exception) -> Response | None:
    if isinstance(exc, Refused):
        return _refused(exc)
    if isinstance(exc, rm.Invalid):
        detail = str(exc)
        errors = [{"detail": detail, "pointer": f"/{exc.field}" if exc.field else "/"}]
        return problem(400, "Validation failed", detail, errors=errors)
    if isinstance(exc, rm.InvalidVersion):
        return problem(
            422,
            "Invalid version or not permitted",
            "The specified version does not exist (or perhaps you don't have permission to use it?)",
        )
    if isinstance(exc, NotFound):
        return problem(404, "Not found", str(exc) or "Not found.")
    if isinstance(exc, Denied):
        return problem(403, "Forbidden", str(exc))
    if isinstance(exc, Conflict):
        return problem(409, "Conflict", str(exc))
    if isinstance(exc, QuotaExceeded):
        return problem(403, "Quota exceeded", str(exc))
    if isinstance(exc, Unavailable):
        answer = problem(503, "Service unavailable", exc.advice)
        answer.headers["Retry-After"] = str(exc.retry_after)
        return answer
    if isinstance(exc, Unauthenticated):
        return problem(401, "Unauthenticated", "You did not pass an authentication token")
    if isinstance(exc, jsonsafe.InvalidJSON):
        return problem(400, "Validation failed", f"The request body is not valid JSON: {exc}")
    return None


def endpoint(fn: Handler) -> Handler:
    """A handler whose core errors become problem details; never a bare 500."""

    @functools.wraps(fn)
    async def run(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as e:
            mapped = _map(e)
            if mapped is None:
                log.exception("replicate request %s %s failed", request.method, request.url.path)
                return problem(500, "Internal server error", f"internal error: {type(e).__name__}")
            return mapped

    return run


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    doc = jsonsafe.loads(raw) if raw.strip() else {}
    if not isinstance(doc, dict):
        raise rm.Invalid("The request body must be a JSON object")
    return doc


def _p(request: Request, key: str) -> str:
    value: str = request.path_params[key]
    return value


def _cursor(request: Request) -> str | None:
    return request.query_params.get("cursor") or None


def _page(request: Request, page: rm.Page, path: str, render: Callable[[Any], dict[str, Any]]) -> Response:
    return JSONResponse(page_json(request, page, path, [render(item) for item in page.items]))


def _named(
    get: Callable[..., Any],
    update: Callable[..., Any],
    delete: Callable[..., Any],
    render: Callable[[Request, Any], dict[str, Any]],
) -> Handler:
    """GET, PATCH and DELETE of one `{owner}/{name}` object (a model, a deployment)."""

    @endpoint
    async def one(request: Request) -> Response:
        args = (_store(request), _actor(request), _p(request, "owner"), _p(request, "name"))
        if request.method == "DELETE":
            await run_in_threadpool(delete, *args)
            return Response(status_code=204)
        if request.method == "PATCH":
            body = await _body(request)
            return JSONResponse(render(request, await run_in_threadpool(update, *args, body)))
        return JSONResponse(render(request, await run_in_threadpool(get, *args)))

    return one


# ---------------------------------------------------------------------------------------------- account


@endpoint
async def account(request: Request) -> Response:
    actor = _actor(request)
    if actor.principal is None:
        return JSONResponse(account_json("user", actor.name, "local admin"))
    found = await run_in_threadpool(accounts.get, _store(request), actor.principal)
    name = found.display_name if found is not None else actor.principal
    return JSONResponse(account_json("user", actor.principal, name))


@endpoint
async def hardware(request: Request) -> Response:
    _actor(request)
    return JSONResponse([{"sku": sku, "name": name} for sku, name in rm.HARDWARE])


# ---------------------------------------------------------------------------------------------- models


@endpoint
async def models(request: Request) -> Response:
    actor, store = _actor(request), _store(request)
    if request.method == "POST":
        body = await _body(request)
        model = await run_in_threadpool(rm.create_model, store, actor, body)
        return JSONResponse(model_json(request, model), status_code=201)
    if request.method == "QUERY":
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise rm.Invalid("The query must be UTF-8 text", "query") from None
        page = await run_in_threadpool(rm.search_models, store, actor, text[:MAX_QUERY])
    else:
        page = await run_in_threadpool(rm.list_models, store, actor, _cursor(request))
    return _page(request, page, "/v1/models", lambda m: model_json(request, m))


model = _named(rm.get_model, rm.update_model, rm.delete_model, model_json)


@endpoint
async def versions(request: Request) -> Response:
    actor, store = _actor(request), _store(request)
    owner, name = _p(request, "owner"), _p(request, "name")
    page = await run_in_threadpool(rm.list_versions, store, actor, owner, name, _cursor(request))
    return _page(request, page, f"/v1/models/{owner}/{name}/versions", version_json)


@endpoint
async def version(request: Request) -> Response:
    actor, store = _actor(request), _store(request)
    args = (store, actor, _p(request, "owner"), _p(request, "name"), _p(request, "version_id"))
    if request.method == "DELETE":
        await run_in_threadpool(rm.delete_version, *args)
        return Response(status_code=204)
    return JSONResponse(version_json(await run_in_threadpool(rm.get_version, *args)))


# ---------------------------------------------------------------------------------------------- predictions


@endpoint
async def predictions(request: Request) -> Response:
    actor, store = _actor(request), _store(request)
    if request.method == "POST":
        body = await _body(request)
        run = await run_in_threadpool(rm.create_prediction, store, actor, body)
        return JSONResponse(run_json(request, run), status_code=201)
    page = await run_in_threadpool(rm.list_runs, store, actor, "prediction", _cursor(request))
    return _page(request, page, "/v1/predictions", lambda r: run_json(request, r))


def _predictions_of(kind: str) -> Handler:
    """`POST …/{owner}/{name}/predictions` of a model or a deployment (`kind`: the keyword naming it)."""

    @endpoint
    async def create(request: Request) -> Response:
        actor, store = _actor(request), _store(request)
        body = await _body(request)
        ref = {kind: f"{_p(request, 'owner')}/{_p(request, 'name')}"}
        run = await run_in_threadpool(rm.create_prediction, store, actor, body, **ref)
        return JSONResponse(run_json(request, run), status_code=201)

    return create


model_predictions = _predictions_of("model")
deployment_predictions = _predictions_of("deployment")


def _run_endpoints(kind: str) -> tuple[Handler, Handler, Handler]:
    @endpoint
    async def one(request: Request) -> Response:
        actor, store = _actor(request), _store(request)
        ident = _p(request, "id")
        if request.method == "DELETE" and kind == "prediction":
            await run_in_threadpool(rm.delete_prediction, store, actor, ident)
            return Response(status_code=204)
        return JSONResponse(run_json(request, await run_in_threadpool(rm.get_run, store, actor, kind, ident)))

    @endpoint
    async def cancel(request: Request) -> Response:
        actor, store = _actor(request), _store(request)
        run = await run_in_threadpool(rm.cancel_run, store, actor, kind, _p(request, "id"))
        return JSONResponse(run_json(request, run))

    @endpoint
    async def report(request: Request) -> Response:
        actor, store = _actor(request), _store(request)
        body = await _body(request)
        run = await run_in_threadpool(rm.report_run, store, actor, kind, _p(request, "id"), body)
        return JSONResponse(run_json(request, run))

    return one, cancel, report


prediction, cancel_prediction, report_prediction = _run_endpoints("prediction")
training, cancel_training, report_training = _run_endpoints("training")


@endpoint
async def trainings(request: Request) -> Response:
    actor, store = _actor(request), _store(request)
    page = await run_in_threadpool(rm.list_runs, store, actor, "training", _cursor(request))
    return _page(request, page, "/v1/trainings", lambda r: run_json(request, r))


@endpoint
async def create_training(request: Request) -> Response:
    actor, store = _actor(request), _store(request)
    body = await _body(request)
    args = (store, actor, _p(request, "owner"), _p(request, "name"), _p(request, "version_id"), body)
    run = await run_in_threadpool(rm.create_training, *args)
    return JSONResponse(run_json(request, run), status_code=201)


@endpoint
async def pending(request: Request) -> Response:
    """The runner's work list: predictions and trainings still `starting` that the caller may run."""
    runs = await run_in_threadpool(rm.pending_runs, _store(request), _actor(request))
    return JSONResponse({"results": [{"kind": r.kind, **run_json(request, r)} for r in runs]})


# ---------------------------------------------------------------------------------------------- deployments


@endpoint
async def deployments(request: Request) -> Response:
    actor, store = _actor(request), _store(request)
    if request.method == "POST":
        body = await _body(request)
        created = await run_in_threadpool(rm.create_deployment, store, actor, body)
        return JSONResponse(deployment_json(created))
    page = await run_in_threadpool(rm.list_deployments, store, actor)
    return _page(request, page, "/v1/deployments", deployment_json)


deployment = _named(
    rm.get_deployment, rm.update_deployment, rm.delete_deployment, lambda _, d: deployment_json(d)
)


def routes() -> list[BaseRoute]:
    m = "/v1/models/{owner}/{name}"
    return [
        Route("/v1/account", account, methods=["GET"]),
        Route("/v1/hardware", hardware, methods=["GET"]),
        Route("/v1/models", models, methods=["GET", "POST", "QUERY"]),
        Route(m, model, methods=["GET", "PATCH", "DELETE"]),
        Route(f"{m}/versions", versions, methods=["GET"]),
        Route(f"{m}/versions/{{version_id}}", version, methods=["GET", "DELETE"]),
        Route(f"{m}/versions/{{version_id}}/trainings", create_training, methods=["POST"]),
        Route(f"{m}/predictions", model_predictions, methods=["POST"]),
        Route("/v1/predictions", predictions, methods=["GET", "POST"]),
        Route("/v1/predictions/{id}", prediction, methods=["GET", "DELETE"]),
        Route("/v1/predictions/{id}/cancel", cancel_prediction, methods=["POST"]),
        Route("/v1/predictions/{id}/report", report_prediction, methods=["POST"]),
        Route("/v1/trainings", trainings, methods=["GET"]),
        Route("/v1/trainings/{id}", training, methods=["GET"]),
        Route("/v1/trainings/{id}/cancel", cancel_training, methods=["POST"]),
        Route("/v1/trainings/{id}/report", report_training, methods=["POST"]),
        Route("/v1/runner/pending", pending, methods=["GET"]),
        Route("/v1/deployments", deployments, methods=["GET", "POST"]),
        Route("/v1/deployments/{owner}/{name}", deployment, methods=["GET", "PATCH", "DELETE"]),
        Route("/v1/deployments/{owner}/{name}/predictions", deployment_predictions, methods=["POST"]),
    ]
