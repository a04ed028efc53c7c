"""Streamed answers whose first piece is made before the answer starts."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

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
        try:
            yield first
            yield from body
        finally:
            body.close()  # releases the listing's read snapshot, however the answer ended

    return StreamingResponse(rest(), media_type=media_type)
