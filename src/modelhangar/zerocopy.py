"""Blob bytes from the file to the socket without passing through Python: `os.sendfile`.

uvicorn offers no zero-copy extension, so this outermost ASGI wrapper offers one itself: the ASGI
`http.response.zerocopysend` message (`file`, `offset`, `count`, `more_body`, as the extension is
specified) on plain-HTTP connections of uvicorn's protocols. It waits until the response head has
left the transport's buffer, sends the file's range with `os.sendfile` from a worker thread (the
socket stays non-blocking: the thread waits for it with `select`, so the event loop never blocks
and never sees a blocking socket), then tells uvicorn the bytes went out and lets it finish the
response as usual. Anything it does not recognise (another server, TLS, a transport with no
socket) gets no extension, and the blob is streamed as before (`faces/oci/wire.BlobBody`).

This leans on uvicorn's `RequestResponseCycle` (its `transport`, `flow`, `expected_content_length`,
`disconnected`): `pyproject.toml` pins uvicorn below 0.55, and the tests serve every blob answer
through this path, so a change there fails loudly instead of corrupting a download.
"""

from __future__ import annotations

import asyncio
import os
import select
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhangar import directbody

EXTENSION = "http.response.zerocopysend"
STALL = 60.0
"""Seconds a client may take no bytes at all before the send gives up (the connection is closed)."""
_senders = ThreadPoolExecutor(max_workers=64, thread_name_prefix="sendfile")
"""The threads that send blob files: their own, not the event loop's default executor, which has six
threads on a 2-core machine, so that a seventh parallel download waited for one of them."""


class ClientGone(OSError):
    """The client closed the connection (or stopped reading) before the bytes went out."""


def _cycle(send: Send) -> Any:
    """uvicorn's request-response cycle behind `send`, if it is one this module can drive."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    needed = ("flow", "expected_content_length", "disconnected")
    if transport is None or not all(hasattr(cycle, a) for a in needed):
        return None
    if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("socket") is None:
        return None
    return cycle


def _send_range(sock_fd: int, file_fd: int, offset: int, count: int) -> None:
    """`count` bytes of `file_fd` from `offset` to the non-blocking socket (in a worker thread)."""
    while count > 0:
        n = _send_now(sock_fd, file_fd, offset, count)
        if n == 0:  # the socket's buffer is full: wait until the client takes some
            _, writable, _ = select.select([], [sock_fd], [], STALL)
            if not writable:
                raise ClientGone("the client took no bytes for a minute")
            continue
        offset += n
        count -= n


INLINE_SEND = 256 << 10
"""At most this many bytes go to the socket right from the event loop, as much as the socket takes at
once without waiting; the rest goes from a worker thread. A small blob (a config, a manifest-sized
layer) then costs no hop to a thread (README, "Small requests")."""


def _send_now(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    """What of `count` bytes the non-blocking socket takes now (never waits)."""
    try:
        n = os.sendfile(sock_fd, file_fd, offset, count)
    except BlockingIOError:
        return 0
    except (BrokenPipeError, ConnectionResetError) as e:
        raise ClientGone(str(e)) from None
    if n == 0 and count > 0:
        raise OSError("the file ended before its recorded size")
    return n


async def _send_file(cycle: Any, message: Message) -> None:
    transport = cycle.transport
    if cycle.flow.write_paused:
        await cycle.flow.drain()
    while transport.get_write_buffer_size() and not cycle.disconnected:  # the head, not yet on the wire
        await asyncio.sleep(0.0005)
    if cycle.disconnected:
        return
    count = int(message["count"])
    if count > cycle.expected_content_length:
        raise RuntimeError("Response content longer than Content-Length")
    file = message["file"]
    file_fd = file if isinstance(file, int) else file.fileno()
    # Our own descriptor of the connection: if uvicorn closes its own meanwhile (the client left), the
    # number cannot be reused for another client's connection while the thread still writes to it.
    sock_fd = os.dup(transport.get_extra_info("socket").fileno())
    loop = asyncio.get_running_loop()
    try:
        offset = int(message.get("offset", 0))
        sent = _send_now(sock_fd, file_fd, offset, min(count, INLINE_SEND))
        if sent < count:
            await loop.run_in_executor(_senders, _send_range, sock_fd, file_fd, offset + sent, count - sent)
    except ClientGone:
        transport.close()  # the response is cut: nobody must take what follows for a response
        cycle.disconnected = True
        return
    except BaseException:
        transport.close()
        raise
    finally:
        os.close(sock_fd)
    cycle.expected_content_length -= count


class ZeroCopy:
    """Offers `http.response.zerocopysend` to the app where the server's connection allows it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = _cycle(send) if scope["type"] == "http" else None
        if cycle is None:
            await self.app(scope, receive, send)
            return
        extensions = {**(scope.get("extensions") or {}), EXTENSION: {}}
        receive_into = directbody.offer(cycle)
        if receive_into is not None:  # large upload bodies off the event loop (directbody.py)
            extensions[directbody.EXTENSION] = {"receive_into": receive_into}
        scope = {**scope, "extensions": extensions}

        async def sending(message: Message) -> None:
            if message["type"] != EXTENSION:
                await send(message)
                return
            await _send_file(cycle, message)
            if not message.get("more_body", False) and not cycle.disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(scope, receive, sending)
