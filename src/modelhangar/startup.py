"""Serving: listen first, build the app after (README, "Start-up").

`hangar serve` answers `GET /api/version` within a fraction of a second at any size of the store: what
runs before the socket listens imports only uvicorn, Starlette's plumbing and the guards, and opens
nothing. Everything else runs right after, in the background: importing the faces and FastAPI,
opening the store (the migrations check, finishing interrupted deletions), then the server's own
background tasks (GC, reclaims, last-used flushes, rendering listing entries that are missing). A
request other than an anonymous `GET /api/version` waits until the app is built; if building fails
the server logs why, stops, and `hangar serve` exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhangar import __version__, connections, guards
from modelhangar.access_log import AccessLog, configure_logging
from modelhangar.core.config import Settings
from modelhangar.faces.ollama.version import OLLAMA_COMPAT_VERSION
from modelhangar.zerocopy import ZeroCopy

log = logging.getLogger("modelhangar")
VERSION_BODY = f'{{"version":"{OLLAMA_COMPAT_VERSION}","modelhangar":"{__version__}"}}'.encode()


def _answers_early(scope: Scope) -> bool:
    """An anonymous `GET`/`HEAD /api/version`: the same answer the built app gives, with nothing to check
    (a request with credentials waits, since a wrong token is a 401 on every path)."""
    return (
        scope["path"] == "/api/version"
        and scope["method"] in ("GET", "HEAD")
        and not any(k == b"authorization" for k, _ in scope["headers"])
    )


class Deferred:
    """The whole app (`server.create_app`), built in the background once the server listens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: ASGIApp | None = None
        self.failed: BaseException | None = None
        self._ready: asyncio.Event | None = None
        self._build: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._lifespan: asyncio.Task[None] | None = None
        self.on_failure: Callable[[], None] = lambda: None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(receive, send)
            return
        if self.app is None:
            if scope["type"] == "http" and _answers_early(scope):
                await _version(scope, send)
                return
            assert self._ready is not None
            await self._ready.wait()
            if self.app is None:
                await guards.error_response(scope["path"], 503, "the server failed to start")(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        self._ready = asyncio.Event()
        self._build = asyncio.create_task(self._start())
        await send({"type": "lifespan.startup.complete"})  # uvicorn listens from here
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        await self._build
        if self._lifespan is not None:
            await self._to_app.put({"type": "lifespan.shutdown"})
            await self._from_app.get()
            await self._lifespan
        await send({"type": "lifespan.shutdown.complete"})

    async def _start(self) -> None:
        try:
            app = await asyncio.to_thread(_create_app, self.settings)
            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
            lifespan = asyncio.create_task(self._run_lifespan(app, scope))
            await self._to_app.put({"type": "lifespan.startup"})
            reply = await self._from_app.get()
            if reply["type"] != "lifespan.startup.complete":
                with contextlib.suppress(Exception):
                    await lifespan  # it ended with the error it reported
                raise RuntimeError(reply.get("message") or "the app did not start")
            self._lifespan = lifespan
            self.app = app
        except Exception as e:
            log.error("modelhangar could not start: %s", e)
            self.failed = e
            self.on_failure()  # the server stops; run_server exits 1
        finally:
            assert self._ready is not None
            self._ready.set()

    async def _run_lifespan(self, app: ASGIApp, scope: Scope) -> None:
        await app(scope, self._to_app.get, self._from_app.put)


def _create_app(settings: Settings) -> ASGIApp:
    from modelhangar import server  # every face, FastAPI, the store: after the socket listens

    return server.create_app(settings)


async def _version(scope: Scope, send: Send) -> None:
    headers = [(b"content-length", str(len(VERSION_BODY)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    body = b"" if scope["method"] == "HEAD" else VERSION_BODY
    await send({"type": "http.response.body", "body": body})


def run_server(
    settings: Settings, *, json_log: bool = False, tls_cert: str | None = None, tls_key: str | None = None
) -> None:
    """Serve until interrupted (SystemExit(1) if the app could not be built); over HTTPS with a
    certificate and its key (`hangar serve --tls-cert`)."""
    import uvicorn

    os.umask(0o077)  # the data directory is the server's alone: directories 0700, files 0600
    connections.raise_fd_limit()
    configure_logging(settings.log_level, as_json=json_log)
    if settings.policies:  # a bad retention policy fails here, before listening
        from modelhangar.core.retention import policy_from_config

        for doc in settings.policies:
            policy_from_config(doc)
    deferred = Deferred(settings)
    app: Any = ZeroCopy(AccessLog(guards.Guards(deferred, settings)))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        **connections.uvicorn_options(settings),
    )
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True

    deferred.on_failure = stop
    server.run()
    if deferred.failed is not None or not server.started:
        raise SystemExit(1)
