"""Streamed answers whose first piece is made before the answer starts."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelhangar.core.catalog.db import retrying

Body = Generator[bytes, None, None]


async def started(make: Callable[[], Body], media_type: str) -> StreamingResponse:
    """Stream the body `make()` makes, a listing read from the catalog, having made its first piece on
    a worker thread first, run again (`retrying`) while the catalog's database is briefly unavailable:
    what still fails there is answered with a status in the face's own format, never a 200 cut short
    (README, "Safety rules"). A failure after that can only cut the body; a listing that fits in its
    first batch cannot meet one."""

    @retrying
    def begin() -> tuple[Body, bytes]:
        body = make()
        return body, next(body, b"")

    body, first = await run_in_threadpool(begin)

    def rest() -> Iterator[bytes]:
        yield first
        yield from body

    return _Listing(rest(), body, media_type=media_type)


class _Listing(StreamingResponse):
    """A streamed listing that releases its read snapshot (closes `body`) on a worker thread however the
    answer ended: also when the client went before the first piece was sent, when the iterator never
    started and so would never run a `finally` of its own."""

    def __init__(self, content: Iterator[bytes], body: Body, media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await run_in_threadpool(self._body.close)
