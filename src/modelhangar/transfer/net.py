"""The connections a pull or push opens: checked where they go, bounded in time and pace.

Every connection, the first and every redirect hop alike, is made by `_GuardedBackend`: it
resolves the name once, checks every address against the egress policy (`core/egress.py`,
HANGAR_PULL_FROM), and connects to a checked address (TLS still verifies the name), so a DNS
answer that changes between check and connect cannot reach anything else.

Every read and write on those connections goes through `_PacedStream`, which fails the transfer
when its deadline passes (HANGAR_TRANSFER_DEADLINE) or when a connection moves fewer bytes than
HANGAR_TRANSFER_MIN_RATE asks for in a span of time spent waiting on it: a registry trickling a
byte every few seconds cannot hold a transfer for long.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from modelhangar import __version__
from modelhangar.core.config import Settings
from modelhangar.core.egress import EgressPolicy, EgressRefused
from modelhangar.core.store import Actor
from modelhangar.transfer.errors import RegistryError

WRITE_PIECE = 64 << 10
"""Writes are sent this much at a time, so the pace is checked while a large body goes out."""
DEFAULT_READ_TIMEOUT = 60.0


class TransferTooSlow(RegistryError):
    """The registry moved too few bytes, or the transfer ran past its deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=504)


def _size(n: int) -> str:
    return f"{n >> 10} KiB" if n >= 1 << 10 else f"{n} bytes"


class Pace:
    """One transfer's deadline and minimum rate."""

    def __init__(self, deadline: float, min_bytes: int, span: float) -> None:
        self.ends = time.monotonic() + deadline
        self.deadline = deadline
        self.min_bytes = min_bytes
        self.span = span

    def left(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise TransferTooSlow(
                f"the transfer took longer than {self.deadline:g}s (HANGAR_TRANSFER_DEADLINE)"
            )
        return left

    def timeout(self, requested: float | None) -> float:
        """The timeout of one read or write: never past the deadline."""
        left = self.left()
        return left if requested is None else min(requested, left)

    def too_slow(self, got: int, waited: float) -> TransferTooSlow:
        return TransferTooSlow(
            f"the registry moved {_size(got)} in {waited:.0f}s of waiting, less than "
            f"{_size(self.min_bytes)} per {self.span:g}s (HANGAR_TRANSFER_MIN_RATE)"
        )


class _PacedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, pace: Pace) -> None:
        self._inner = inner
        self._pace = pace
        self._got = 0
        self._waited = 0.0

    def _account(self, n: int, waited: float) -> None:
        pace = self._pace
        if not pace.min_bytes:
            return
        self._got += n
        self._waited += waited
        if self._waited >= pace.span:
            if self._got < pace.min_bytes * self._waited / pace.span:
                raise pace.too_slow(self._got, self._waited)
            self._got, self._waited = 0, 0.0

    def _timed_out(self, timeout: float, started: float) -> None:
        """After a read or write timed out: the deadline or the rate is why, or neither."""
        self._pace.left()
        waited = time.monotonic() - started
        if self._pace.min_bytes and waited >= min(timeout, self._pace.span) * 0.99:
            raise self._pace.too_slow(self._got, self._waited + waited) from None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        t = self._pace.timeout(timeout)
        started = time.monotonic()
        try:
            data = self._inner.read(max_bytes, t)
        except httpcore.ReadTimeout:
            self._timed_out(t, started)
            raise
        self._account(len(data), time.monotonic() - started)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            piece, view = view[:WRITE_PIECE], view[WRITE_PIECE:]
            t = self._pace.timeout(timeout)
            started = time.monotonic()
            try:
                self._inner.write(bytes(piece), t)
            except httpcore.WriteTimeout:
                self._timed_out(t, started)
                raise
            self._account(len(piece), time.monotonic() - started)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._pace.timeout(timeout))
        return _PacedStream(inner, self._pace)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    def __init__(self, limits: TransferLimits, pull: bool, pace: Pace) -> None:
        self._inner = httpcore.SyncBackend()
        self._limits = limits
        self._pull = pull
        self._pace = pace

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        self._pace.left()
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        try:
            self._limits.policy.check(host, port, addresses, is_admin=self._limits.is_admin, pull=self._pull)
        except EgressRefused as e:
            raise RegistryError(str(e), status=403) from None
        error: Exception = httpcore.ConnectError(f"cannot connect to {host}")
        for address in addresses:  # connect to what was checked, never to a fresh resolution
            try:
                stream = self._inner.connect_tcp(
                    address, port, self._pace.timeout(timeout), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
                continue
            return _PacedStream(stream, self._pace)
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("a transfer never opens a unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@dataclass(frozen=True)
class TransferLimits:
    """Where one caller's transfers may connect, and how long and how slowly they may take."""

    policy: EgressPolicy
    is_admin: bool
    deadline: float
    min_bytes: int
    span: float

    @classmethod
    def of(cls, settings: Settings, actor: Actor) -> TransferLimits:
        min_bytes, span = settings.transfer_min_rate
        return cls(
            EgressPolicy.from_setting(settings.pull_from),
            actor.admin,
            settings.transfer_deadline,
            min_bytes,
            span,
        )

    def client(self, *, pull: bool) -> httpx.Client:
        """An HTTP client whose every connection is guarded and paced; it follows no redirect
        (the registry client follows blob redirects itself)."""
        pace = Pace(self.deadline, self.min_bytes, self.span)
        ssl_context = httpx.create_ssl_context(trust_env=True)
        transport = httpx.HTTPTransport(verify=ssl_context)
        transport._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, network_backend=_GuardedBackend(self, pull, pace)
        )
        read = self.span if self.min_bytes else DEFAULT_READ_TIMEOUT
        return httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(read, connect=10.0),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: it would resolve names unchecked
            headers={"User-Agent": f"modelhangar/{__version__}", "Accept-Encoding": "identity"},
        )
