"""Run a core call on the event loop when it cannot wait, else on a worker thread (`core/waits.py`).

A hop to a worker thread costs more than the catalog read of a small request: under load the thread
queues for the interpreter lock behind the event loop, so a HEAD of a blob or a GET of a manifest took
3 to 4 times as long as the same read on the loop (issue 16). `run` first tries the call on the loop
inside `waits.no_waiting()`; if anything on its way could wait (a write, PostgreSQL, an object store,
a lock), the call stops before doing it and runs again, whole, on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from modelhangar.core.catalog import async_reads
from modelhangar.core.waits import NETWORK_READ, WouldWait, awaited_reads, no_waiting

P = ParamSpec("P")
R = TypeVar("R")
_AWAIT = async_reads.available()


async def run(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn(*args, **kwargs)`, on the loop if it never waits, else on a worker thread. `fn` must do
    nothing that matters before its first call that may wait (`core/waits.py`).

    On PostgreSQL, where the first thing that would wait is a catalog read, the call runs again on
    the loop in a greenlet whose one-statement reads are awaited (`core/catalog/async_reads.py`):
    the loop serves other requests while the database answers, and only what still could wait (a
    write, a lock) sends the call to a thread. A call whose first argument is a store whose catalog
    awaits reads (`Catalog.awaits_reads`) goes straight there."""
    store = args[0] if args else None
    if not getattr(getattr(store, "catalog", None), "awaits_reads", False):  # SQLite, or no store
        try:
            with no_waiting():
                return fn(*args, **kwargs)
        except WouldWait as e:
            if e.what != NETWORK_READ or not _AWAIT:
                return await run_in_threadpool(fn, *args, **kwargs)
    from sqlalchemy.util import greenlet_spawn

    try:
        result: R = await greenlet_spawn(lambda: _awaiting(fn, *args, **kwargs))
        return result
    except WouldWait:
        pass
    return await run_in_threadpool(fn, *args, **kwargs)


def _awaiting(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    with no_waiting(), awaited_reads():
        return fn(*args, **kwargs)
