"""Connection limits, so idle or slow clients cannot starve the others (README, Configuration).

uvicorn closes an idle keep-alive connection (HANGAR_KEEP_ALIVE) but has no limit on how long a
client may take to send a request head, nor on how many connections it holds open, nor on how
large a head may grow. Its HTTP protocol is extended here with the three:

* at most HANGAR_MAX_CONNECTIONS connections: the next one is answered 503 and closed at once;
* a request head must be complete HANGAR_HEADER_TIMEOUT after the connection opened (or after its
  first byte, on a kept-alive connection), else the connection is closed;
* a request head (request line and headers) may hold at most MAX_HEAD bytes (431 otherwise).

The open-file limit is raised to its hard limit at start, so the connection limit, not the file
descriptor table, is what a flood runs into.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelhangar.core.config import Settings

MAX_HEAD = 64 << 10
"""Bytes of a request line plus headers accepted (h11's default is 16 KiB, nginx's 8 KiB)."""


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _refusal(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class _LimitedHttp(HttpToolsProtocol):
    max_connections = 1000
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_refusal(503, "Service Unavailable", "too many connections, try again"))
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD and not self.transport.is_closing():
            message = f"request head larger than {MAX_HEAD} bytes"
            self.transport.write(_refusal(431, "Request Header Fields Too Large", message))
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle is None or self.transport.is_closing():
            return  # a request refused before it got a cycle
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.cycle is None or self.transport.is_closing():
            return
        super().on_message_complete()


def protocol(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with this server's connection limits."""
    return type(
        "LimitedHttp",
        (_LimitedHttp,),
        {"max_connections": settings.max_connections, "header_timeout": settings.header_timeout},
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments `uvicorn.run` takes for these limits."""
    return {
        "http": protocol(settings),
        "timeout_keep_alive": max(1, math.ceil(settings.keep_alive)),
    }
