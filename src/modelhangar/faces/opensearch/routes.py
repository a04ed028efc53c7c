"""OpenSearch's routes mapped onto `core/ml_models.py`: one dispatcher for every path under `/_`, so an
unknown route, a wrong method and every error answer OpenSearch's own envelope (never Ollama's, never 500)."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelhangar import guards
from modelhangar.auth import actor_of
from modelhangar.core import ml_models as ml
from modelhangar.core.actors import Actor
from modelhangar.core.errors import Denied, HangarError, NotFound, TooLarge, Unauthenticated, Unavailable
from modelhangar.core.store import Store
from modelhangar.faces.ollama import routes as ollama
from modelhangar.faces.opensearch import fetch, wire

log = logging.getLogger("modelhangar.opensearch")
Handler = Callable[["Call"], Any]


class Call:
    """One request: its actor, store, path parameters, query parameters and body."""

    def __init__(self, request: Request, params: dict[str, str], raw: bytes) -> None:
        self.request = request
        self.params = params
        self.raw = raw
        self.store: Store = request.app.state.store
        self.actor: Actor = actor_of(request, "opensearch")
        self.query = request.query_params

    def json(self) -> dict[str, Any]:
        if not self.raw.strip():
            return {}
        try:
            body = json.loads(self.raw)
        except (ValueError, UnicodeDecodeError):
            raise ml.MLError(400, "Failed to parse the request body as JSON", "parsing_exception") from None
        if not isinstance(body, dict):
            raise ml.MLError(400, "The request body must be a JSON object", "parsing_exception")
        return body


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ROUTES.append((method, re.compile(pattern.replace("{", "(?P<").replace("}", ">[^/]+)") + "/?"), fn))
        return fn

    return register


ML = "/_plugins/_ml"

# ------------------------------------------------------------------------------------ cluster


@route("GET", "/_cluster/health")
def cluster_health(c: Call) -> Any:
    return wire.health()


@route("GET", "/_cluster/settings")
def cluster_settings(c: Call) -> Any:
    return ml.get_cluster_settings(
        c.store,
        flat=c.query.get("flat_settings") == "true",
        defaults=c.query.get("include_defaults") == "true",
    )


@route("PUT", "/_cluster/settings")
def put_cluster_settings(c: Call) -> Any:
    ml.check_settings_admin(c.actor)  # before the body is read, as the security plugin refuses it
    return ml.put_cluster_settings(c.store, c.json())


# ------------------------------------------------------------------------------------ model groups


@route("POST", ML + "/model_groups/_register")
def register_group(c: Call) -> Any:
    return ml.register_group(c.store, c.actor, c.json())


for _m in ("GET", "POST"):
    route(_m, ML + "/model_groups/_search")(lambda c: ml.search(c.store, c.actor, "group", c.json()))
    route(_m, ML + "/models/_search")(lambda c: ml.search(c.store, c.actor, "model", c.json()))
    route(_m, ML + "/tasks/_search")(lambda c: ml.search(c.store, c.actor, "task", c.json()))
    route(_m, ML + "/connectors/_search")(lambda c: ml.search(c.store, c.actor, "connector", c.json()))
    route(_m, ML + "/agents/_search")(lambda c: ml.search(c.store, c.actor, "agent", c.json()))


@route("PUT", ML + "/model_groups/{id}")
def update_group(c: Call) -> Any:
    return ml.update_group(c.store, c.actor, c.params["id"], c.json())


# ------------------------------------------------------------------------------------ models


@route("POST", ML + "/models/_register")
@route("POST", ML + "/models/_upload")
def register_model(c: Call) -> Any:
    store, actor = c.store, c.actor

    def start(url: str, task_id: str, model_id: str) -> None:
        threading.Thread(
            target=fetch.fetch_into,
            args=(store, actor, url, task_id, model_id),
            daemon=True,
            name=f"ml-fetch-{model_id}",
        ).start()

    answer = ml.register_model(store, actor, c.json(), start)
    if c.query.get("deploy") == "true" and "model_id" in answer:
        ml.deploy(store, actor, answer["model_id"])
    return answer


@route("POST", ML + "/models/_register_meta")
@route("POST", ML + "/models/meta")
def register_meta(c: Call) -> Any:
    return ml.register_meta(c.store, c.actor, c.json())


@route("POST", ML + "/models/{id}/upload_chunk/{n}")
@route("POST", ML + "/models/{id}/chunk/{n}")
def upload_chunk(c: Call) -> Any:
    return ml.upload_chunk(c.store, c.actor, c.params["id"], c.params["n"], c.raw)


@route("POST", ML + "/models/{id}/_undeploy")
@route("POST", ML + "/models/{id}/_unload")
def undeploy(c: Call) -> Any:
    return ml.undeploy(c.store, c.actor, [c.params["id"]])


@route("POST", ML + "/models/_undeploy")
@route("POST", ML + "/models/_unload")
def undeploy_many(c: Call) -> Any:
    ids = c.json().get("model_ids") or []
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
        raise ml.bad("model_ids must be a list of model ids")
    return ml.undeploy(c.store, c.actor, ids)


# ------------------------------------------------------------------------------------ tasks, connectors


@route("POST", ML + "/connectors/_create")
def create_connector(c: Call) -> Any:
    return ml.create_connector(c.store, c.actor, c.json())


# ------------------------------------------------------------------------------------ pipelines, agents


for _kind, _prefix in (("ingest", "/_ingest/pipeline"), ("search", "/_search/pipeline")):

    def _bind(kind: str, prefix: str) -> None:
        route("PUT", prefix + "/{id}")(
            lambda c: ml.put_pipeline(c.store, c.actor, kind, c.params["id"], c.json())
        )
        route("GET", prefix + "/{id}")(lambda c: ml.get_pipelines(c.store, kind, c.params["id"]))
        route("GET", prefix)(lambda c: ml.get_pipelines(c.store, kind, None))
        route("DELETE", prefix + "/{id}")(lambda c: ml.delete_pipeline(c.store, kind, c.params["id"]))

    _bind(_kind, _prefix)


@route("POST", ML + "/agents/_register")
def register_agent(c: Call) -> Any:
    return ml.register_agent(c.store, c.actor, c.json())


@route("GET", ML + "/agents/{id}")
def get_agent(c: Call) -> Any:
    return ml.get_agent(c.store, c.params["id"])


@route("DELETE", ML + "/agents/{id}")
def delete_agent(c: Call) -> Any:
    return ml.delete_agent(c.store, c.params["id"])


# ------------------------------------------------------------------------------------ by id


def _by_id(fn: Callable[[Store, Actor, str], Any]) -> Handler:
    """One object by its id, as `ml.<fn>(store, actor, id)`."""
    return lambda c: fn(c.store, c.actor, c.params["id"])


# Registered after the `_search`, `_register` and `_create` routes above: for a method, the first
# matching route wins, so those are not taken for an `{id}`.
for _method, _path, _fn in (
    ("GET", "/model_groups/{id}", ml.get_group),
    ("DELETE", "/model_groups/{id}", ml.delete_group),
    ("GET", "/models/{id}", ml.get_model),
    ("DELETE", "/models/{id}", ml.delete_model),
    ("POST", "/models/{id}/_deploy", ml.deploy),
    ("POST", "/models/{id}/_load", ml.deploy),
    ("GET", "/tasks/{id}", ml.get_task),
    ("DELETE", "/tasks/{id}", ml.delete_task),
    ("GET", "/connectors/{id}", ml.get_connector),
    ("DELETE", "/connectors/{id}", ml.delete_connector),
):
    route(_method, ML + _path)(_by_id(_fn))


# ------------------------------------------------------------------------------------ dispatch


def _find(method: str, path: str) -> tuple[Handler | None, dict[str, str], list[str]]:
    allowed: list[str] = []
    for m, pattern, fn in ROUTES:
        found = pattern.fullmatch(path)
        if found is None:
            continue
        if m == method or (method == "HEAD" and m == "GET"):
            return fn, {k: unquote(v) for k, v in found.groupdict().items()}, []
        allowed.append(m)
    return None, {}, allowed


def _error_of(exc: Exception) -> Response:
    if isinstance(exc, ml.MLError):
        return wire.error(exc.status, exc.reason, exc.type, exc.causes)
    if isinstance(exc, Unauthenticated):
        return wire.error_for(401, str(exc))
    if isinstance(exc, NotFound):
        return wire.error(404, str(exc))
    if isinstance(exc, Denied):
        return wire.error(403, str(exc))
    if isinstance(exc, TooLarge):
        return wire.error(413, str(exc))
    if isinstance(exc, Unavailable):  # OpenSearch's own answer when a node cannot serve for now
        return wire.error(503, exc.advice, headers={"Retry-After": str(exc.retry_after)})
    return wire.error(400, str(exc), "illegal_argument_exception")


async def _body(request: Request, limit: int | None) -> bytes:
    """The body; a chunk (uncapped by the guards) is read up to ML Commons' chunk size, no further."""
    if limit is None:
        return await request.body()
    got = bytearray()
    async for piece in request.stream():
        got += piece
        if len(got) > limit:
            raise ml.bad("Chunk size exceeds 10MB")
    return bytes(got)


async def dispatch(request: Request) -> Response:
    path = request.url.path
    fn, params, allowed = _find(request.method, path)
    if fn is None:
        if allowed:
            reason = (
                f"Incorrect HTTP method for uri [{path}] and method [{request.method}], "
                f"allowed: [{', '.join(sorted(set(allowed)))}]"
            )
            return wire.error(405, reason, "status_exception")
        return wire.error(
            400,
            f"no handler found for uri [{path}] and method [{request.method}]",
            "illegal_argument_exception",
        )
    try:
        raw = await _body(request, ml.CHUNK_MAX if guards.ML_CHUNK.fullmatch(path) else None)
        call = Call(request, params, raw)
        answer = await run_in_threadpool(fn, call)
    except HangarError as e:
        return _error_of(e)
    except Exception as e:  # never a 500 in another face's format; logged for us
        log.exception("opensearch %s %s failed", request.method, path)
        return wire.error(500, f"internal error: {type(e).__name__}", "exception")
    return JSONResponse(answer)


async def root(request: Request) -> Response:
    """`GET /` and `HEAD /`: an OpenSearch node for OpenSearch's clients, Ollama's text for the rest."""
    if not wire.wants_opensearch(request):
        return await ollama.root(request)
    info = wire.node_info(str(request.app.state.store.settings.home))
    if request.method == "HEAD":
        return Response(status_code=200, media_type="application/json")
    return JSONResponse(info)


METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def routes() -> list[Route]:
    """The node's root (put before Ollama's) and every path under `/_`."""
    endpoint: Callable[[Request], Awaitable[Response]] = dispatch
    return [Route("/", root, methods=["GET", "HEAD"]), Route("/_{rest:path}", endpoint, methods=METHODS)]
