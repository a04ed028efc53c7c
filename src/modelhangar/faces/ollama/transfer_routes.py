"""`POST /api/pull` and `POST /api/push`: Ollama's progress stream over modelhangar's transfers."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from modelhangar.core.names import ModelName
from modelhangar.core.store import Store
from modelhangar.faces.ollama.wire import error, json_body, model_field, parse_or

if TYPE_CHECKING:  # the transfer client (httpx) is imported by the first pull or push, not at start-up
    from modelhangar.transfer.progress import Emit

log = logging.getLogger("modelhangar")
Transfer = Callable[..., object]
_DONE = object()


def _stream(run: Callable[[Emit], object]) -> StreamingResponse:
    """Run the transfer in a thread; each progress event becomes one NDJSON line as it happens."""
    events: queue.Queue[object] = queue.Queue()

    from modelhangar.transfer.errors import TRANSFER_ERRORS

    def work() -> None:
        try:
            run(events.put)
        except TRANSFER_ERRORS as e:
            events.put({"error": str(e)})
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


async def _transfer(request: Request, transfer: Transfer) -> Response:
    body = await json_body(request)
    name: ModelName = parse_or(model_field(body, "model", "name"), 400, "invalid model name")
    insecure = bool(body.get("insecure"))
    store: Store = request.app.state.store

    def run(emit: Emit) -> object:
        return transfer(store, name, insecure=insecure, emit=emit)

    if body.get("stream", True) is not False:
        return _stream(run)
    last: list[dict[str, Any]] = [{"status": "success"}]

    def keep(event: dict[str, Any]) -> None:
        last[0] = event

    from modelhangar.transfer.errors import TRANSFER_ERRORS

    try:
        await run_in_threadpool(run, keep)
    except TRANSFER_ERRORS as e:
        return error(getattr(e, "status", 500), str(e))
    return JSONResponse(last[0])


async def pull_route(request: Request) -> Response:
    from modelhangar.transfer.pull import pull

    return await _transfer(request, pull)


async def push_route(request: Request) -> Response:
    from modelhangar.transfer.push import push

    return await _transfer(request, push)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/pull", pull_route, methods=["POST"]),
        Route("/api/push", push_route, methods=["POST"]),
    ]
