"""Request bodies into the store: blob uploads of the registry face and Ollama's blob API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from modelhangar.core.blobstore import PieceSink

CHUNK = 2 << 20
"""Request bodies are fed to the store in pieces of at least this size."""
BODY_EXTENSION = "modelhangar.body.receive_into"
BODY_DIRECT_MIN = 8 << 20
"""Bodies from this size on go straight from the socket to the store where the server can."""


async def pump(request: Request, sink: PieceSink) -> None:
    """Feed the request body to `sink` in pieces of at least CHUNK bytes (the chunks as received, never
    joined): each piece is written and hashed on two worker threads at once while the next one is
    received.

    A body of at least BODY_DIRECT_MIN bytes with a Content-Length goes from the socket to the
    sink without the event loop where the server offers `modelhangar.body.receive_into`
    (`modelhangar/directbody.py`, issue 16: uploads at the disk's speed).

    When this returns or raises, no write or hash is still running.
    """
    direct = request.scope.get("extensions", {}).get(BODY_EXTENSION)
    length = request.headers.get("content-length", "")
    whole = length.isdigit() and "transfer-encoding" not in request.headers
    if direct is not None and whole and int(length) >= BODY_DIRECT_MIN:
        await direct["receive_into"](sink, int(length))
        return
    busy: list[asyncio.Future[None]] = []

    def start(piece: list[bytes]) -> None:
        busy[:] = [
            asyncio.ensure_future(run_in_threadpool(sink.write_piece, piece)),
            asyncio.ensure_future(run_in_threadpool(sink.hash_piece, piece)),
        ]

    try:
        piece: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            if not chunk:
                continue
            piece.append(chunk)
            size += len(chunk)
            if size >= CHUNK:
                await asyncio.gather(*busy)
                start(piece)
                piece, size = [], 0
        await asyncio.gather(*busy)
        if piece:
            start(piece)
            await asyncio.gather(*busy)
    finally:
        running = [f for f in busy if not f.done()]
        if running:
            await asyncio.wait(running)  # let them finish before the caller undoes them


async def guarded(work: Awaitable[None], undo: Callable[[], None]) -> None:
    """Await `work`; on any failure (a disconnect included) run the blocking `undo`, then re-raise."""
    try:
        await work
    except BaseException:
        await run_in_threadpool(undo)
        raise
