"""The app: every face over one Store, plus online GC in the background (`startup.py` serves it, building
it once the socket listens)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelhangar import __version__, guards, web
from modelhangar.auth import Authenticate
from modelhangar.core import gc, listing, reclaim
from modelhangar.core.config import Settings
from modelhangar.core.errors import Denied, QuotaExceeded, TooLarge, Unauthenticated, Unavailable, one_line
from modelhangar.core.retention import policy_from_config, prune
from modelhangar.core.store import Actor, Store
from modelhangar.faces.hangar import docs
from modelhangar.faces.hangar.accounts import router as accounts_router
from modelhangar.faces.hangar.routes import router as hangar_router
from modelhangar.faces.hangar.routes import validation_items
from modelhangar.faces.oci import routes as oci
from modelhangar.faces.ollama import routes as ollama
from modelhangar.faces.ollama import transfer_routes
from modelhangar.faces.opensearch import routes as opensearch
from modelhangar.faces.replicate import routes as replicate

log = logging.getLogger("modelhangar")


def _error_body(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    return guards.error_response(request.url.path, status, message, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = "404 page not found"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        message = "405 method not allowed"
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return _error_body(request, exc.status_code, message, headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (one route per method, as `/api/hangar/tokens`)."""
    from starlette.routing import Match

    def walk(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            inner = getattr(getattr(route, "original_router", None), "routes", None)
            yield from walk(inner) if inner is not None else [route]

    methods: set[str] = set()
    for route in walk(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _too_large(request: Request, exc: Exception) -> Response:
    return _error_body(request, 413, str(exc))


_ACCOUNT_STATUS: dict[type[Exception], int] = {Unauthenticated: 401, Denied: 403, QuotaExceeded: 413}


async def _account_error(request: Request, exc: Exception) -> Response:
    """What the accounts refuse, in the face's own format (a route may answer it more precisely)."""
    status = next(code for kind, code in _ACCOUNT_STATUS.items() if isinstance(exc, kind))
    return _error_body(request, status, str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unavailable)
    log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, one_line(exc))
    return guards.unavailable(request.url.path, exc)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_body(request, 500, f"internal error: {type(exc).__name__}")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_items(exc.errors())}, status_code=400)


def _no_telemetry() -> dict[str, Any]:
    """FastAPI 0.165 and later look for OpenTelemetry providers on every request (environment
    lookups and provider checks on the hot path, issue 16). The server has its own access log, so
    that is switched off where FastAPI has the setting, unless OpenTelemetry is configured through
    its environment (an `OTEL_*` variable, or FastAPI's `FASTAPI_OTEL_AUTO_CONFIGURE`)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    if any(name.startswith("OTEL_") or name == "FASTAPI_OTEL_AUTO_CONFIGURE" for name in os.environ):
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(settings: Settings) -> FastAPI:
    for doc in settings.policies:  # fail at start-up, not in the background, on a bad policy
        policy_from_config(doc)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(Store, settings)
        app.state.store = store
        await run_in_threadpool(store.finish_deletions, store.pending_deletions())
        tasks = [
            asyncio.create_task(_gc_loop(store, settings.gc_interval)),
            asyncio.create_task(_reclaim_loop(store)),
        ]
        tasks.append(asyncio.create_task(_backfill_listings(store)))
        if settings.last_used_flush > 0:  # last-used times in batches (core/recency.py)
            store.last_used.buffering = True
            tasks.append(asyncio.create_task(_flush_loop(store, settings.last_used_flush)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.catalog.aclose()  # the loop's connections for awaited reads (PostgreSQL)
            store.close()  # writes the last-used times still pending

    app = FastAPI(
        title="modelhangar",
        version=__version__,
        description="modelhangar's own API. Ollama's API (`/api/...`) is served beside it, as Ollama has it.",
        lifespan=lifespan,
        docs_url=None,  # served from the package by faces/hangar/docs.py
        redoc_url=None,
        **_no_telemetry(),
    )
    handlers: dict[Any, Any] = {
        **ollama.EXCEPTION_HANDLERS,
        StarletteHTTPException: _http_error,
        RequestValidationError: _validation_error,
        TooLarge: _too_large,
        **dict.fromkeys(_ACCOUNT_STATUS, _account_error),
        Unavailable: _unavailable,
        Exception: _unexpected_error,
    }
    for exc, handler in handlers.items():
        app.add_exception_handler(exc, handler)
    app.include_router(hangar_router)
    app.include_router(accounts_router)
    app.openapi = docs.with_security(app.openapi, settings.auth)  # type: ignore[method-assign]
    app.router.routes.extend(docs.routes())
    app.router.routes.extend(opensearch.routes())  # its `/` before Ollama's: it hands Ollama's clients on
    app.router.routes.extend(ollama.routes())
    app.router.routes.extend(transfer_routes.routes())
    app.router.routes.extend(oci.routes())
    app.router.routes.extend(replicate.routes())
    app.router.routes.extend(web.routes())
    app.add_middleware(Authenticate, unauthorized=_unauthorized)
    return app


def _unauthorized(path: str, message: str) -> Response:
    """A 401 in the face's own format (the registry face answers its own, with its token challenge)."""
    if guards.face_of(path) == "web":  # a browser: the sign-in page
        return web.unauthorized(path, message)
    return guards.error_response(path, 401, message)


def _scheduled_round(store: Store) -> None:
    """Retention policies from the config file, then GC (which expires the trash)."""
    actor = Actor(name="retention", face="schedule")
    for doc in store.settings.policies:
        results = prune(store, policy_from_config(doc), actor)
        if results:
            log.info("retention %s: %d models", doc, sum(r.ok for r in results))
    report = gc.collect(store, blocking=False)  # one collector per store: skip if another one runs
    if report.skipped:
        log.debug("gc skipped: another process is collecting this store")
    elif report.blobs or report.orphan_files:
        log.info("gc reclaimed %d blobs, %d bytes", len(report.blobs), report.bytes_freed)


RECLAIM_POLL = 1.0
"""How often a server looks for blobs whose reuse fuse ended (one indexed read)."""


async def _reclaim_loop(store: Store) -> None:
    """Free the blobs deletes left for the reuse fuse as soon as their fuse ends (README)."""
    while True:
        try:
            due = await run_in_threadpool(reclaim.next_due, store)
            wait = RECLAIM_POLL if due is None else min(max(due - time.time(), 0.0), RECLAIM_POLL)
            await asyncio.sleep(wait)
            if due is not None and due <= time.time():
                released = await run_in_threadpool(reclaim.run_due, store)
                if released.blobs:
                    log.info(
                        "reclaimed %d blobs, %d bytes, after their reuse fuse",
                        len(released.blobs),
                        released.bytes,
                    )
        except asyncio.CancelledError:
            raise
        except Unavailable as e:  # a database restarting: no traceback, the next poll retries
            log.warning("reclaiming failed: %s", one_line(e))
            await asyncio.sleep(RECLAIM_POLL)
        except Exception:  # keep serving; the next poll retries
            log.exception("reclaiming failed")
            await asyncio.sleep(RECLAIM_POLL)


async def _gc_loop(store: Store, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(_scheduled_round, store)
        except Unavailable as e:  # a database restarting: no traceback, the next round retries
            log.warning("background gc failed: %s", one_line(e))
        except Exception:  # keep serving; the next round retries
            log.exception("background gc failed")


async def _flush_loop(store: Store, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(store.last_used.flush)
        except Unavailable as e:  # a database restarting: no traceback, the next round retries
            log.warning("writing last-used times failed: %s", one_line(e))
        except Exception:  # kept pending; the next round retries
            log.exception("writing last-used times failed")


LISTING_BACKFILL_PAUSE = 0.05
"""Seconds between the transactions that render missing listing entries (requests go first)."""


async def _backfill_listings(store: Store) -> None:
    """Render the listing entries of tags written before 0014 or behind the store's back, once, after
    start-up (`core/listing.py`): work in proportion to the store never runs before the server listens."""
    try:
        done = await run_in_threadpool(listing.backfill, store.catalog.write, 2000, LISTING_BACKFILL_PAUSE)
        if done:
            log.info("rendered %d listing entries", done)
    except asyncio.CancelledError:
        raise
    except Exception:  # listings stay right without them (the reader renders them); the next start retries
        log.exception("rendering listing entries failed")
