"""`POST /api/pull` and `POST /api/push`: Ollama's progress stream over modelhangar's transfers."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from modelhangar.core.names import ModelName
from modelhangar.core.store import Store
from modelhangar.faces.ollama.wire import error, json_body, model_field, parse_or
from modelhangar.transfer.errors import TRANSFER_ERRORS, transfer_error_text
from modelhangar.transfer.progress import Emit
from modelhangar.transfer.pull import pull
from modelhangar.transfer.push import push

log = logging.getLogger("modelhangar")
Transfer = Callable[..., object]
_DONE = object()


def _stream(run: Callable[[Emit], object]) -> StreamingResponse:
    """Run the transfer in a thread; each progress event becomes one NDJSON line as it happens."""
    events: queue.Queue[object] = queue.Queue()

    def work() -> None:
        try:
            run(events.put)
        except TRANSFER_ERRORS as e:
            events.put({"error": transfer_error_text(e)})
        except Exception as e:  # a last line the client can show, instead of a cut stream
            log.exception("transfer failed")
            events.put({"error": f"internal error: {type(e).__name__}: {e}"})
        finally:
            events.put(_DONE)

    def lines() -> Iterator[bytes]:
        threading.Thread(target=work, daemon=True).start()
        while (event := events.get()) is not _DONE:
            yield json.dumps(event, separators=(",", ":")).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _transfer(request: Request, transfer: Transfer, *, takes_source: bool = False) -> Response:
    body = await json_body(request)
    name: ModelName = parse_or(model_field(body, "model", "name"), 400, "invalid model name")
    insecure = bool(body.get("insecure"))
    store: Store = request.app.state.store
    extra: dict[str, ModelName] = {}
    if takes_source and body.get("source") is not None:  # modelhangar's own: push SOURCE as `model`
        extra["source"] = parse_or(model_field(body, "source"), 400, "invalid source model name")

    def run(emit: Emit) -> object:
        return transfer(store, name, insecure=insecure, emit=emit, **extra)

    if body.get("stream", True) is not False:
        return _stream(run)
    last: list[dict[str, Any]] = [{"status": "success"}]

    def keep(event: dict[str, Any]) -> None:
        last[0] = event

    try:
        await run_in_threadpool(run, keep)
    except TRANSFER_ERRORS as e:
        unreachable = isinstance(e, httpx.TransportError)  # the registry, not this server, failed
        return error(getattr(e, "status", 502 if unreachable else 500), transfer_error_text(e))
    return JSONResponse(last[0])


async def pull_route(request: Request) -> Response:
    return await _transfer(request, pull)


async def push_route(request: Request) -> Response:
    return await _transfer(request, push, takes_source=True)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/pull", pull_route, methods=["POST"]),
        Route("/api/push", push_route, methods=["POST"]),
    ]
