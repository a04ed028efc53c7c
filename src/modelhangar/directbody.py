"""Large request bodies read from the socket by worker threads, in big pieces, not by the event loop.

uvicorn hands a body to the app 256 KB at a time, each piece copied twice on the event loop (into
the cycle's `bytearray`, then out as `bytes`) with a wake-up and a flow-control pause per piece: a
blob upload through it stops near 550 MB/s with an app that does nothing (`bench/blob_throughput.py`
prints the machine's ceilings; issue 16, "Uploads at the disk's speed"). This module offers the app
one more extension on uvicorn's plain-HTTP connections, `modelhangar.body.receive_into`: an awaitable
`receive_into(sink, length)` that reads the rest of a body of `length` bytes (a `Content-Length`)
straight from the socket in one worker thread, into fresh buffers of `PIECE` bytes, and hands each
piece to the sink's `write_piece` and `hash_piece` (a `core.blobstore.PieceSink`) on two more threads
while the next piece is read. One copy per byte (kernel to buffer), no event loop in the way.

After it the connection is closed once the response is sent (uvicorn's parser never saw the body, so
it cannot parse what may follow): the answer says `connection: close`, which every client handles.
A client that goes away mid-body raises starlette's `ClientDisconnect`, as `request.stream()` does,
after every write and hash has finished (so the caller may undo them).

Like `zerocopy.py` this leans on uvicorn's `RequestResponseCycle` (`transport`, `flow`, `body`,
`more_body`, `keep_alive`, `waiting_for_100_continue`, `disconnected`); `pyproject.toml` pins
uvicorn below 0.55, and the upload tests send their large bodies through this path.
"""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from starlette.requests import ClientDisconnect

from modelhangar.core.blobstore import PieceSink

EXTENSION = "modelhangar.body.receive_into"
PIECE = 4 << 20
"""Bytes read from the socket before a piece goes to the sink (the sink writes and hashes it on two
threads while the next one is read)."""
STALL = 60.0
"""Seconds a client may send nothing at all before the upload gives up."""

_readers = ThreadPoolExecutor(max_workers=64, thread_name_prefix="body-read")
_pool = ThreadPoolExecutor(max_workers=128, thread_name_prefix="body-sink")
"""The reader of each upload, and its write and hash threads (two per upload at a time); their own,
not the event loop's default executor (a few threads on a small machine)."""

ReceiveInto = Callable[[PieceSink, int], Awaitable[None]]


class _Gone(Exception):
    pass


def _read_exactly(fd: int, view: memoryview) -> None:
    """Fill `view` from the non-blocking socket `fd`, waiting for it with `select` (GIL released)."""
    got = 0
    while got < len(view):
        try:
            n = os.readv(fd, [view[got:]])
        except BlockingIOError:
            readable, _, _ = select.select([fd], [], [], STALL)
            if not readable:
                raise _Gone("the client sent nothing for a minute") from None
            continue
        except (ConnectionResetError, BrokenPipeError) as e:
            raise _Gone(str(e)) from None
        if n == 0:
            raise _Gone("the client closed the connection mid-body")
        got += n


def _pipeline(fd: int, first: bytes, remaining: int, sink: PieceSink) -> None:
    """In a worker thread: `first` (what uvicorn had already read), then `remaining` bytes from the
    socket, piece by piece; piece N is written and hashed while piece N+1 is read."""
    busy: list[Future[None]] = []

    def hand(chunks: list[Any]) -> None:
        for f in busy:
            f.result()  # in order: the previous piece is written and hashed before this one starts
        busy[:] = [_pool.submit(sink.write_piece, chunks), _pool.submit(sink.hash_piece, chunks)]

    try:
        if first:
            hand([first])
        while remaining > 0:
            buf = bytearray(min(PIECE, remaining))  # fresh: a sink may keep the piece (S3 parts)
            _read_exactly(fd, memoryview(buf))
            remaining -= len(buf)
            hand([buf])
    finally:
        errors = []
        for f in busy:
            try:
                f.result()
            except BaseException as e:  # re-raised below, once both have finished
                errors.append(e)
        if errors:
            raise errors[0]


def offer(cycle: Any) -> ReceiveInto | None:
    """`receive_into` for one request of uvicorn's cycle, or None if this connection cannot do it."""
    needed = ("flow", "body", "more_body", "keep_alive", "waiting_for_100_continue", "disconnected")
    if not type(cycle).__module__.endswith("httptools_impl") or not all(hasattr(cycle, a) for a in needed):
        return None  # only the protocol `hangar serve` runs (connections.py), the one the tests drive

    async def receive_into(sink: PieceSink, length: int) -> None:
        transport = cycle.transport
        if cycle.disconnected or transport.is_closing():
            raise ClientDisconnect()
        cycle.flow.pause_reading()  # from here on only this reads the socket
        cycle.keep_alive = False  # the parser is behind the socket now: close after the answer
        if cycle.waiting_for_100_continue:
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        first = bytes(cycle.body)
        cycle.body = bytearray()
        rest = length - len(first) if cycle.more_body else 0
        cycle.more_body = False  # a later `receive` sees the body as ended, never the socket
        if rest < 0:
            raise ClientDisconnect()  # more body than its Content-Length: not a body we can take
        fd = os.dup(transport.get_extra_info("socket").fileno())  # ours, even if uvicorn closes its own
        try:
            await asyncio.get_running_loop().run_in_executor(_readers, _pipeline, fd, first, rest, sink)
        except _Gone:
            transport.close()
            cycle.disconnected = True
            raise ClientDisconnect() from None
        finally:
            os.close(fd)

    return receive_into
