"""The HTTP server: every face over one Store, plus online GC in the background."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelhangar import __version__
from modelhangar.core import gc
from modelhangar.core.config import Settings
from modelhangar.core.retention import policy_from_config, prune
from modelhangar.core.store import Actor, Store
from modelhangar.faces.hangar.routes import router as hangar_router
from modelhangar.faces.oci import routes as oci
from modelhangar.faces.ollama import routes as ollama
from modelhangar.faces.ollama import transfer_routes

log = logging.getLogger("modelhangar")


def _is_local_host(host: str) -> bool:
    """Ollama's DNS-rebinding rule: loopback-bound servers answer only local Host names."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").lower()
    if name in ("", "localhost", socket.gethostname().lower()):
        return True
    if name.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


class HostGuard:
    """Refuses requests whose Host header is not local when bound to loopback (CVE-2024-28224)."""

    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not _is_local_host(host):
                await PlainTextResponse("forbidden host", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error_body(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/") and not request.url.path.startswith("/api/hangar"):
        return JSONResponse({"error": message}, status_code=status)
    return JSONResponse({"detail": message}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = "404 page not found"
    elif exc.status_code == 405:
        message = "405 method not allowed"
    return _error_body(request, exc.status_code, message)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error_body(request, 500, f"internal error: {type(exc).__name__}")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": exc.errors()}, status_code=400)


def create_app(settings: Settings) -> FastAPI:
    for doc in settings.policies:  # fail at start-up, not in the background, on a bad policy
        policy_from_config(doc)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(Store, settings)
        app.state.store = store
        await run_in_threadpool(store.finish_deletions, store.pending_deletions())
        tasks = [asyncio.create_task(_gc_loop(store, settings.gc_interval))]
        if settings.last_used_flush > 0:  # last-used times in batches (core/recency.py)
            store.last_used.buffering = True
            tasks.append(asyncio.create_task(_flush_loop(store, settings.last_used_flush)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            store.close()  # writes the last-used times still pending

    app = FastAPI(
        title="modelhangar",
        version=__version__,
        description="modelhangar's own API. Ollama's API (`/api/...`) is served beside it, as Ollama has it.",
        lifespan=lifespan,
    )
    handlers: dict[Any, Any] = {
        **ollama.EXCEPTION_HANDLERS,
        StarletteHTTPException: _http_error,
        RequestValidationError: _validation_error,
        Exception: _unexpected_error,
    }
    for exc, handler in handlers.items():
        app.add_exception_handler(exc, handler)
    app.include_router(hangar_router)
    app.router.routes.extend(ollama.routes())
    app.router.routes.extend(transfer_routes.routes())
    app.router.routes.extend(oci.routes())
    return app


def _scheduled_round(store: Store) -> None:
    """Retention policies from the config file, then GC (which expires the trash)."""
    actor = Actor(name="retention", face="schedule")
    for doc in store.settings.policies:
        results = prune(store, policy_from_config(doc), actor)
        if results:
            log.info("retention %s: %d models", doc, sum(r.ok for r in results))
    report = gc.collect(store)
    if report.blobs or report.orphan_files:
        log.info("gc reclaimed %d blobs, %d bytes", len(report.blobs), report.bytes_freed)


async def _gc_loop(store: Store, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(_scheduled_round, store)
        except Exception:  # keep serving; the next round retries
            log.exception("background gc failed")


async def _flush_loop(store: Store, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(store.last_used.flush)
        except Exception:  # kept pending; the next round retries
            log.exception("writing last-used times failed")


def run_server(settings: Settings) -> None:
    """Serve until interrupted."""
    import uvicorn

    loopback = settings.host in ("127.0.0.1", "::1", "localhost")
    app = HostGuard(create_app(settings), enabled=loopback)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
