"""The files behind a SQLite store's named leases and gates (`Catalog.lease`, `Catalog.gate`).

Kept apart from `db.py`, and free of SQLAlchemy, so that `hangar serve` can test the blob-location
gate of a SQLite store before it listens without importing the catalog (README, "Start-up").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path


def key(name: str) -> int:
    """The lease's 64-bit key (a PostgreSQL advisory lock in a key space of its own)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def file(name: str) -> Path:
    """The lease's flock file, relative to the store's lock directory."""
    return Path("leases", f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.lock")


@contextlib.contextmanager
def flocked(path: Path, *, shared: bool = False, blocking: bool = False) -> Iterator[bool]:
    """Hold an flock on `path` (made if missing) for the block; yields False when `blocking` is
    off and a holder conflicts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        try:
            kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            fcntl.flock(f.fileno(), kind | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
