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
import threading
from collections.abc import Iterator

_state = threading.local()


class WouldWait(BaseException):
    """Raised by `may_wait` inside `no_waiting()`. A BaseException, so that no `except Exception` on the
    way takes it for a failure."""


@contextlib.contextmanager
def no_waiting() -> Iterator[None]:
    """Within the block (on this thread), any call that could wait raises `WouldWait` instead."""
    before = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


def refused() -> bool:
    """Whether this thread is inside `no_waiting()`."""
    return bool(getattr(_state, "on", False))


def may_wait(what: str) -> None:
    """Called before `what` (a write, a network round trip, a lock): raises `WouldWait` in `no_waiting()`."""
    if getattr(_state, "on", False):
        raise WouldWait(what)
