"""`POST /api/pull` and `POST /api/push`: Ollama's progress stream over modelhangar's transfers.

Transfers run on their own bounded threads (`transfer/runner.py`); the request only waits for
the result, or forwards progress events as they come, on the event loop. No thread of the
request pool is held, however many transfers are in progress.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from modelhangar.auth import actor_of
from modelhangar.core.errors import Denied, NotFound, QuotaExceeded
from modelhangar.core.names import ModelName
from modelhangar.core.store import Actor, Store
from modelhangar.faces.ollama.wire import error, json_body, model_field, parse_or

if TYPE_CHECKING:  # the transfer client (httpx) is imported by the first pull or push, not at start-up
    from modelhangar.transfer.progress import Emit
    from modelhangar.transfer.runner import TransferRunner

log = logging.getLogger("modelhangar")
Transfer = Callable[..., object]
_DONE = object()


def _runner(request: Request) -> TransferRunner:
    """The app's transfer threads, started with the first transfer."""
    from modelhangar.transfer.runner import TransferRunner

    state = request.app.state
    runner: TransferRunner | None = getattr(state, "transfers", None)
    if runner is None:
        settings = request.app.state.store.settings
        runner = state.transfers = TransferRunner(settings.transfers, settings.transfer_queue)
    return runner


def _busy() -> Response:
    from modelhangar.transfer.runner import RETRY_AFTER, Busy

    return JSONResponse({"error": str(Busy())}, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})


def _stream(runner: TransferRunner, run: Callable[[Emit], object]) -> Response:
    """Each progress event becomes one NDJSON line as it happens; a failure is the last line."""
    from modelhangar.transfer.errors import TRANSFER_ERRORS, transfer_error_text
    from modelhangar.transfer.runner import Busy

    loop = asyncio.get_running_loop()
    events: asyncio.Queue[object] = asyncio.Queue()

    def put(event: object) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    def work() -> None:
        try:
            run(put)
        except TRANSFER_ERRORS as e:
            put({"error": transfer_error_text(e)})
        except Exception as e:  # a last line the client can show, instead of a cut stream
            log.exception("transfer failed")
            put({"error": f"internal error: {type(e).__name__}"})
        finally:
            put(_DONE)

    try:
        runner.submit(work)
    except Busy:
        return _busy()

    async def lines() -> AsyncIterator[bytes]:
        while (event := await events.get()) is not _DONE:
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
    actor: Actor = actor_of(request, "ollama")
    # Only who may write the model pulled into (or pushed from) may pull or push it, checked before
    # anything is fetched or sent (issue 11; core/permissions.py).
    local = extra.get("source", name)
    try:
        await run_in_threadpool(store.require_writable, actor, local.repository)
    except NotFound:
        return error(404, f"model '{local.display_shortest()}' not found")
    except Denied as e:
        return error(403, str(e))
    runner = _runner(request)

    def run(emit: Emit) -> object:
        return transfer(store, name, insecure=insecure, emit=emit, actor=actor, **extra)

    if body.get("stream", True) is not False:
        return _stream(runner, run)
    last: list[dict[str, Any]] = [{"status": "success"}]

    def keep(event: dict[str, Any]) -> None:
        last[0] = event

    import httpx

    from modelhangar.transfer.errors import TRANSFER_ERRORS, transfer_error_text
    from modelhangar.transfer.runner import Busy

    try:
        await asyncio.wrap_future(runner.submit(lambda: run(keep)))
    except Busy:
        return _busy()
    except (Denied, QuotaExceeded) as e:  # the pulled model is not the actor's, or over its quota
        return error(403 if isinstance(e, Denied) else 413, str(e))
    except TRANSFER_ERRORS as e:
        unreachable = isinstance(e, httpx.TransportError)  # the registry, not this server, failed
        return error(getattr(e, "status", 502 if unreachable else 500), transfer_error_text(e))
    return JSONResponse(last[0])


async def pull_route(request: Request) -> Response:
    from modelhangar.transfer.pull import pull

    return await _transfer(request, pull)


async def push_route(request: Request) -> Response:
    from modelhangar.transfer.push import push

    return await _transfer(request, push, takes_source=True)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/pull", pull_route, methods=["POST"]),
        Route("/api/push", push_route, methods=["POST"]),
    ]
