"""Recency on read paths: reuse touches written at a granularity, last-used times written in batches.

Reads never write on every request: a HEAD of a blob, a GET of a manifest by tag and `/api/show`
answer from a read snapshot, and what they record is written no more often than this:

* A reuse touch (`blobs.touched_at`, see the locking protocol in `core/store.py`) is what gives
  a blob about to be referenced its fuse against a concurrent delete, across processes, so it
  stays durable; but it is written only when the stored touch is older than
  `touch_granularity(fuse)` (a sixth of the fuse, at most 5 s; with no fuse every reuse writes).
  A reuse at time t therefore leaves `touched_at >= t - g`, and every delete allows for it: it
  defers blobs touched within `fuse + g` of its own time (`Store.reuse_fuse`), so a blob reused
  less than `fuse` ago is never reclaimed by a delete, exactly as if every reuse wrote.
* Last-used times (`tags.last_used_at`, read by `prune --unused-for` and retention policies) are
  kept in memory by a server and written in one transaction every `HANGAR_LAST_USED_FLUSH`
  (default 30 s) and at shutdown; a crash loses at most that much recency, never a model or a
  blob. Listings in the same process see the pending times. Without buffering (the CLI, tests
  that open a store), each use is written at once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa

from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import Catalog

MAX_TOUCH_GRANULARITY = 5.0
log = logging.getLogger("modelhangar")


def touch_granularity(fuse: float) -> float:
    """How old a stored reuse touch may be before a reuse writes a new one (see the module doc)."""
    return min(MAX_TOUCH_GRANULARITY, fuse / 6)


_MARK_USED = (
    t.tags.update()
    .where(
        t.tags.c.repository_id
        == sa.select(t.repositories.c.id)
        .where(t.repositories.c.name_key == sa.bindparam("repo_key"))
        .scalar_subquery(),
        t.tags.c.name_key == sa.bindparam("tag_key"),
        t.tags.c.last_used_at < sa.bindparam("ts"),
    )
    .values(last_used_at=sa.bindparam("ts"))
)


_TOKEN_USED = (
    t.tokens.update()
    .where(
        t.tokens.c.id == sa.bindparam("token_id"),
        sa.or_(t.tokens.c.last_used_at.is_(None), t.tokens.c.last_used_at < sa.bindparam("ts")),
    )
    .values(last_used_at=sa.bindparam("ts"))
)


class LastUsed:
    """When each model was last pulled, shown or otherwise used: written at once, or buffered."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], float] = {}
        self._tokens: dict[str, float] = {}
        """When each API token was last used (`core/accounts.py`), by token id, not written yet."""
        self.buffering = False

    def note_token(self, token_id: str, ts: float) -> None:
        """Record a use of an API token: written at once, or with the next flush when buffering."""
        if not self.buffering:
            self._write({}, {token_id: ts})
            return
        with self._lock:
            if self._tokens.get(token_id, 0.0) < ts:
                self._tokens[token_id] = ts

    def token_pending(self, token_id: str) -> float | None:
        if not self._tokens:
            return None
        with self._lock:
            return self._tokens.get(token_id)

    def note(self, repository: str, tag: str, ts: float) -> None:
        """Record a use of `repository:tag` at `ts` (matched case-insensitively, as tags are)."""
        key = (repository.lower(), tag.lower())
        if not self.buffering:
            self._write({key: ts})
            return
        with self._lock:
            if self._pending.get(key, 0.0) < ts:
                self._pending[key] = ts

    def pending(self, repository: str, tag: str) -> float | None:
        """A use of `repository:tag` noted here but not written yet."""
        if not self._pending:
            return None
        with self._lock:
            return self._pending.get((repository.lower(), tag.lower()))

    def has_pending(self) -> bool:
        return bool(self._pending)

    def flush(self) -> int:
        """Write every pending use in one transaction; returns how many. On failure they stay pending."""
        with self._lock:
            batch, self._pending = self._pending, {}
            tokens, self._tokens = self._tokens, {}
        if not batch and not tokens:
            return 0
        try:
            self._write(batch, tokens)
        except BaseException:
            with self._lock:
                for key, ts in batch.items():
                    if self._pending.get(key, 0.0) < ts:
                        self._pending[key] = ts
                for ident, ts in tokens.items():
                    if self._tokens.get(ident, 0.0) < ts:
                        self._tokens[ident] = ts
            raise
        return len(batch) + len(tokens)

    def _write(self, uses: dict[tuple[str, str], float], tokens: dict[str, float] | None = None) -> None:
        params: list[dict[str, Any]] = [
            {"repo_key": repo, "tag_key": tag, "ts": ts} for (repo, tag), ts in sorted(uses.items())
        ]
        token_params = [{"token_id": ident, "ts": ts} for ident, ts in sorted((tokens or {}).items())]
        with self.catalog.write() as conn:
            if params:
                conn.execute(_MARK_USED, params)
            if token_params:
                conn.execute(_TOKEN_USED, token_params)
