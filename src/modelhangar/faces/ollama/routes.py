"""Routes of Ollama's model API, mapped onto the core with Ollama's shapes, codes and texts."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from modelhangar import __version__
from modelhangar.auth import actor_of
from modelhangar.core import blob_access
from modelhangar.core.deletion import delete_models
from modelhangar.core.digests import InvalidDigest, parse_digest
from modelhangar.core.errors import Denied, DigestMismatch, NotFound, QuotaExceeded, Refused
from modelhangar.core.store import Actor, Store
from modelhangar.faces.bodies import pump
from modelhangar.faces.ollama import create as create_mod
from modelhangar.faces.ollama.show import show_model
from modelhangar.faces.ollama.version import OLLAMA_COMPAT_VERSION
from modelhangar.faces.ollama.wire import (
    OllamaError,
    display_plan,
    empty_ok,
    error,
    json_body,
    model_field,
    ndjson,
    parse_or,
)
from modelhangar.faces.streams import started

FACE = "ollama"


def _actor(request: Request) -> Actor:
    return actor_of(request, FACE)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_COMPAT_VERSION, "modelhangar": __version__})


async def tags(request: Request) -> Response:
    store, actor = _store(request), _actor(request)
    return await started(lambda: _tags_body(store, actor), "application/json")


def _tags_body(store: Store, actor: Actor | None = None) -> Generator[bytes, None, None]:
    """`{"models":[...]}` streamed a batch at a time from the listing entries the store renders when a
    tag is written (`core/listing.py`): no per-model record, parse or format here. Repositories other
    faces made that have no Ollama name are left out, and so are the private models of others."""
    batches = store.iter_listing(actor=actor)
    head, sep = b'{"models":[', ""  # sent with the first batch: after the query (`streams.started`)
    try:
        for batch in batches:
            if batch:
                yield head + (sep + ",".join(batch)).encode()
                head, sep = b"", ","
        yield head + b"]}"
    finally:
        batches.close()  # releases the read snapshot, however the response ended


async def ps(request: Request) -> Response:
    return JSONResponse({"models": []})


async def show(request: Request) -> Response:
    body = await json_body(request)
    raw = model_field(body, "model", "name")
    name = parse_or(raw, 400, "invalid model name")
    store = _store(request)
    actor = _actor(request)
    record = await run_in_threadpool(lambda: store.get_tag(name.repository, name.tag, actor=actor))
    if record is None:
        return error(404, f"model '{name.display_shortest()}' not found")
    try:
        result = await run_in_threadpool(show_model, store, record, bool(body.get("verbose")))
    except NotFound:  # deleted while we read it
        return error(404, f"model '{name.display_shortest()}' not found")
    await run_in_threadpool(store.mark_used, record.repository, record.tag)
    return JSONResponse(result)


async def copy(request: Request) -> Response:
    body = await json_body(request)
    src_raw, dst_raw = body.get("source"), body.get("destination")
    if not isinstance(src_raw, str) or not isinstance(dst_raw, str):
        return error(400, "source and destination are required")
    src = parse_or(src_raw, 400, f'source "{src_raw}" is invalid')
    dst = parse_or(dst_raw, 400, f'destination "{dst_raw}" is invalid')
    store, actor = _store(request), _actor(request)
    try:
        await run_in_threadpool(
            lambda: store.copy_tag(src.repository, src.tag, dst.repository, dst.tag, actor=actor)
        )
    except NotFound:  # the source, or a destination that is another account's private model
        return error(404, f'model "{src_raw}" not found')
    except Denied as e:
        return error(403, str(e))
    except QuotaExceeded as e:
        return error(413, str(e))
    except Refused as e:  # the destination's current version is in use: it is not replaced
        return error(409, str(e))
    return empty_ok()


async def delete(request: Request) -> Response:
    body = await json_body(request)
    raw = model_field(body, "model", "name")
    dry_run = _truthy(request.query_params.get("dry_run"))
    purge = _truthy(request.query_params.get("purge"))
    [result] = await run_in_threadpool(
        delete_models, _store(request), [raw], _actor(request), dry_run=dry_run, purge=purge
    )
    if result.status == "invalid":
        return error(400, f'name "{raw}" is invalid')
    if result.status == "not_found":
        return error(404, f"model '{raw}' not found")
    if result.status == "refused":
        assert result.plan is not None
        status = 403 if all(b.kind == "permission" for b in result.plan.blockers) else 409
        return JSONResponse(
            {"error": result.error, "plan": display_plan(result.plan.to_dict())}, status_code=status
        )
    if dry_run or _truthy(request.query_params.get("plan")):
        assert result.plan is not None
        return JSONResponse(display_plan(result.plan.to_dict()))
    return empty_ok()


def _digest(raw: str) -> str:
    try:
        return str(parse_digest(raw))
    except InvalidDigest as e:
        raise OllamaError(400, "invalid digest format") from e


async def head_blob(request: Request) -> Response:
    digest = _digest(request.path_params["digest"])
    store, actor = _store(request), _actor(request)
    if await run_in_threadpool(blob_access.reuse, store, actor, digest) is None:  # absent, or not theirs
        return error(404, f'blob "{request.path_params["digest"]}" not found')
    return Response(status_code=200)


async def post_blob(request: Request) -> Response:
    digest = _digest(request.path_params["digest"])
    store, actor = _store(request), _actor(request)
    if await run_in_threadpool(blob_access.reuse, store, actor, digest) is not None:
        return Response(status_code=200)
    writer = store.blob_writer()
    try:  # written and hashed off the event loop, large bodies straight from the socket (faces/bodies.py)
        await pump(request, writer)
    except ClientDisconnect:
        writer.discard()
        return error(400, "upload interrupted")
    except BaseException:
        writer.discard()
        raise
    expected_len = request.headers.get("content-length")
    if expected_len is not None and expected_len.isdigit() and int(expected_len) != writer.size:
        writer.discard()
        return error(400, "upload truncated")
    try:
        await run_in_threadpool(
            lambda: store.commit_blob(writer, digest, also=blob_access.record_upload(store, actor, digest))
        )
    except DigestMismatch as e:
        return error(400, f'digest mismatch, expected "{e.expected}", got "{e.actual}"')
    return Response(status_code=201)


async def create(request: Request) -> Response:
    body = await json_body(request)
    req = create_mod.validate(body, _store(request).settings.max_text)
    stream = body.get("stream", True) is not False
    try:
        try:
            statuses, _ = await run_in_threadpool(
                create_mod.build_model, _store(request), req, _actor(request)
            )
        except NotFound as e:  # the base model (or one of its layers) was deleted meanwhile
            raise OllamaError(404, f"model not found: {e}") from e
    except OllamaError as e:
        if stream:
            return ndjson([{"error": e.message}])
        return error(e.status, e.message)
    if stream:
        return ndjson(statuses)
    return JSONResponse(statuses[-1])


async def not_a_runtime(request: Request) -> Response:
    return error(
        501,
        f"modelhangar stores models; it does not run them ({request.url.path} is not available). "
        "Use Ollama to run a model pulled from this server.",
    )


async def ollama_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OllamaError)
    return error(exc.status, exc.message)


def routes() -> list[BaseRoute]:
    runtime = ["/api/generate", "/api/chat", "/api/embed", "/api/embeddings"]
    return [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version, methods=["GET", "HEAD"]),
        Route("/api/tags", tags, methods=["GET", "HEAD"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/copy", copy, methods=["POST"]),
        Route("/api/delete", delete, methods=["DELETE"]),
        Route("/api/blobs/{digest}", head_blob, methods=["HEAD"]),
        Route("/api/blobs/{digest}", post_blob, methods=["POST"]),
        Route("/api/create", create, methods=["POST"]),
        *(Route(path, not_a_runtime, methods=["POST"]) for path in runtime),
    ]


EXCEPTION_HANDLERS: dict[Any, Any] = {OllamaError: ollama_error}
