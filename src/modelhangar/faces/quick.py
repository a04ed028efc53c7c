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

from modelhangar.core.waits import WouldWait, no_waiting

P = ParamSpec("P")
R = TypeVar("R")


async def run(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn(*args, **kwargs)`, on the loop if it never waits, else on a worker thread. `fn` must do
    nothing that matters before its first call that may wait (`core/waits.py`)."""
    try:
        with no_waiting():
            return fn(*args, **kwargs)
    except WouldWait:
        pass
    return await run_in_threadpool(fn, *args, **kwargs)
