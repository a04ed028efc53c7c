"""Calls that may wait, refused where waiting is not allowed (README, "Small requests").

A server answers its most frequent requests (the token check of every request, HEAD of a blob, GET
of a manifest or a blob) on its event loop, without a hop to a worker thread, whenever all they
need is a catalog read that cannot wait: SQLite in WAL mode, whose readers never wait for a writer.
Such code runs inside `no_waiting()`. Every call on the way that could wait (a catalog write, which
queues for the write lock; a read over the network, on PostgreSQL; a store-wide lock or lease; a
request to an object store) calls `may_wait()` before it does anything, which then raises
`WouldWait`, and the caller runs the whole call again where waiting is fine (a worker thread).

So a function run this way must do nothing that matters before its first call that may wait: reads,
and notes kept in memory that the second run makes again (a last-used time), are fine.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_refusing: contextvars.ContextVar[bool] = contextvars.ContextVar("modelhangar_no_waiting", default=False)
_awaiting: contextvars.ContextVar[bool] = contextvars.ContextVar("modelhangar_awaited_reads", default=False)
# Context variables, not thread-locals: `faces/quick.py` runs such a call in a greenlet on the event
# loop while PostgreSQL reads are awaited, and the other tasks the loop runs meanwhile, each in its
# own context, must not see these flags.

NETWORK_READ = "a catalog read over the network"
"""What `may_wait` is told before a read from PostgreSQL: `faces/quick.py` then awaits such reads
on the loop (`awaited_reads()`), where the catalog can (`core/catalog/async_reads.py`)."""


class WouldWait(BaseException):
    """Raised by `may_wait` inside `no_waiting()`. A BaseException, so that no `except Exception` on the
    way takes it for a failure."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@contextlib.contextmanager
def no_waiting() -> Iterator[None]:
    """Within the block (in this context), any call that could wait raises `WouldWait` instead."""
    token = _refusing.set(True)
    try:
        yield
    finally:
        _refusing.reset(token)


@contextlib.contextmanager
def awaited_reads() -> Iterator[None]:
    """Within the block, a one-statement catalog read from PostgreSQL is awaited on the event loop
    (`Catalog.read_once`) instead of refused; anything else that could wait is still refused. Only
    for code run by `faces/quick.py` in a greenlet on the loop."""
    token = _awaiting.set(True)
    try:
        yield
    finally:
        _awaiting.reset(token)


def refused() -> bool:
    """Whether this context is inside `no_waiting()`."""
    return _refusing.get()


def reads_awaited() -> bool:
    """Whether this context is inside `awaited_reads()`."""
    return _awaiting.get()


def may_wait(what: str) -> None:
    """Called before `what` (a write, a network round trip, a lock): raises `WouldWait` in `no_waiting()`."""
    if _refusing.get():
        raise WouldWait(what)
