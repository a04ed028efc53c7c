"""Running one blob transfer per item on a few threads, failing as soon as one fails."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
WORKERS = 4
"""Blobs transferred at once, by pull and by push."""


def each(work: Callable[[T], object], items: Iterable[T], *, name: str) -> None:
    """`work(item)` for every item, WORKERS at a time; the first error is raised and what has not
    started yet is cancelled."""
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix=name) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()
