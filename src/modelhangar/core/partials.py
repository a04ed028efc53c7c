"""Transfers in progress (`<home>/partials/`): kept across restarts so the next pull or push resumes.

A download lives in `sha256-<hex>.partial`; an upload to another registry is remembered in
`push-<key>.json` (the URL of its session there). A transfer holds an exclusive flock on its file
while it works, so GC removes only files nobody is continuing and that are older than the upload
expiry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from modelhangar.core.digests import parse_digest
from modelhangar.core.store import Store


@contextmanager
def locked(path: Path) -> Iterator[BinaryIO]:
    """A transfer's file, opened for appending and exclusively flocked: one transfer per file at a
    time (a second waits; if the first removed the file meanwhile, the current one is opened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "ab")  # noqa: SIM115 - closed below or by the caller's with
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
        except BaseException:
            f.close()
            raise
        f.close()  # the holder finished and removed it meanwhile: open the current one
    with f:
        yield f


def partial_path(store: Store, digest: str) -> Path:
    """Where a download in progress lives: survives restarts, so a second pull resumes it."""
    return store.settings.home / "partials" / f"{parse_digest(digest).filename}.partial"


def push_record_path(store: Store, registry: str, repository: str, digest: str) -> Path:
    """Where a push remembers its upload session at `registry` for `repository` and `digest`."""
    key = hashlib.sha256(f"{registry}\n{repository}\n{parse_digest(digest)}".encode()).hexdigest()
    return store.settings.home / "partials" / f"push-{key[:40]}.json"


def sweep(store: Store, older_than: float) -> list[str]:
    """Remove transfers nobody is continuing (unlocked, untouched since `older_than`)."""
    removed = []
    root = store.settings.home / "partials"
    for path in [*root.glob("*.partial"), *root.glob("push-*.json")]:
        with contextlib.suppress(FileNotFoundError), open(path, "ab") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if path.stat().st_mtime < older_than:
                path.unlink()
                removed.append(f"partials/{path.name}")
    return removed
