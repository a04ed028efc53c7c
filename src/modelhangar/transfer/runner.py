"""Where pulls and pushes run: a few threads of their own, never the threads that answer requests.

A transfer can take hours (or, from a hostile registry, as long as its deadline and minimum rate
allow); run on the request pool, forty of them would stop every other request. Here at most
HANGAR_TRANSFERS run at once and HANGAR_TRANSFER_QUEUE wait for a turn; one more is refused at
once with `Busy` (503 with Retry-After). The threads are daemons: stopping the server does not
wait for a transfer, whose partial download is resumed next time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from modelhangar.transfer.errors import RegistryError

RETRY_AFTER = 10
"""Seconds a refused client is told to wait."""


class Busy(RegistryError):
    """Every running slot and every queue place is taken."""

    def __init__(self) -> None:
        super().__init__(
            "too many pulls and pushes in progress (HANGAR_TRANSFERS, HANGAR_TRANSFER_QUEUE): try later",
            status=503,
        )


class TransferRunner:
    def __init__(self, running: int, queued: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._places = threading.Semaphore(running + queued)
        for i in range(running):
            threading.Thread(target=self._work, name=f"transfer-{i}", daemon=True).start()

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        """Queue `job`; raises Busy (having queued nothing) when there is no place for it."""
        if not self._places.acquire(blocking=False):
            raise Busy()
        future: Future[Any] = Future()
        self._jobs.put((job, future))
        return future

    def _work(self) -> None:
        while True:
            job, future = self._jobs.get()
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(job())
                    except BaseException as e:  # handed to whoever waits on the future
                        future.set_exception(e)
            finally:
                self._places.release()
