"""Downloads in progress (`<home>/partials/`): kept across restarts so a pull resumes them.

A download holds an exclusive flock on its partial file while it writes, so GC removes only
partials nobody is continuing and that are older than the upload expiry.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path

from modelhangar.core.digests import parse_digest
from modelhangar.core.store import Store


def partial_path(store: Store, digest: str) -> Path:
    """Where a download in progress lives: survives restarts, so a second pull resumes it."""
    return store.settings.home / "partials" / f"{parse_digest(digest).filename}.partial"


def sweep(store: Store, older_than: float) -> list[str]:
    """Remove downloads nobody is continuing (unlocked, untouched since `older_than`)."""
    removed = []
    for path in (store.settings.home / "partials").glob("*.partial"):
        with contextlib.suppress(FileNotFoundError), open(path, "ab") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if path.stat().st_mtime < older_than:
                path.unlink()
                removed.append(f"partials/{path.name}")
    return removed
