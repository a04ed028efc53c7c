"""Ollama's progress events (`status`, `digest`, `total`, `completed`), throttled per blob."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Emit = Callable[[dict[str, Any]], None]
"""Where a transfer sends its progress events; called from several threads."""
INTERVAL = 0.05


def short(digest: str) -> str:
    """The 12 hex digits Ollama shows in `pulling <hex12>`."""
    return digest.removeprefix("sha256:")[:12]


class Progress:
    """One blob's progress: an event at most every INTERVAL seconds, unless forced."""

    def __init__(self, emit: Emit, verb: str, digest: str, total: int) -> None:
        self.emit = emit
        self.status = f"{verb} {short(digest)}"
        self.digest = digest
        self.total = total
        self._last = 0.0

    def __call__(self, completed: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= INTERVAL:
            self._last = now
            self.emit(
                {"status": self.status, "digest": self.digest, "total": self.total, "completed": completed}
            )

    def done(self) -> None:
        self(self.total, force=True)
