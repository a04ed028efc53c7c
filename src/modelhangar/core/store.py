"""The store: blobs, manifests, tags and the reference graph between them, over one catalog.

Locking protocol (what keeps invariant 1 of DEVELOPERS.md true):

* Every change of a blob's state happens inside a catalog write transaction that holds that
  blob's row lock: the whole database on SQLite (`BEGIN IMMEDIATE`), `SELECT ... FOR UPDATE` on
  PostgreSQL, always taken in sorted digest order so two writers never deadlock.
* A blob row is `present` (its file is in place) or `deleting` (it looks absent to everyone).
* An uploader writes and fsyncs a private temp file, then, under the row lock, renames it into
  place and marks the row `present`. A crash before the commit leaves a file with no row (or a
  `deleting` row): GC reclaims it, and nothing could have referenced it.
* Reusing a blob that is already present counts as a write: it takes the row lock and bumps
  `touched_at` (only when the stored touch is older than the touch granularity g, see
  `core/recency.py`; a delete allows for g in its cutoff). A manifest commits only if, under
  the row locks, every blob it names is `present`; otherwise it fails with BlobUnknown and
  nothing changes.
* A deleter, under the row lock, re-checks that no manifest references the blob (a fresh query
  after the lock, so it sees any manifest committed meanwhile) and that no writer touched it
  within the reuse fuse (plus g), then marks it `deleting` and commits. Only afterwards, again under the
  row lock, it unlinks the file and drops the row if the row is still `deleting` (an uploader may
  have taken the name back meanwhile). A crash between the two leaves a `deleting` row, which
  looks absent and which the next GC finishes.
* The grace period is a fuse, not a lease: correctness never depends on it. It only spares a
  client the retry of an upload that GC would otherwise have reclaimed under its feet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from modelhangar.core import blob_location, jsonsafe, listing, model_rules, permissions, repo_figures
from modelhangar.core.actors import Actor as Actor  # re-exported: faces import it from here
from modelhangar.core.blobstore import (
    COPY_CHUNK,
    BlobStore,
    BlobWriter,
    LocalBlobStore,
    open_blob_store,
    sha256_file,
)
from modelhangar.core.catalog import schema as t
from modelhangar.core.catalog.db import Catalog, is_retryable, retrying
from modelhangar.core.config import Settings
from modelhangar.core.digests import parse_digest, sha256_digest
from modelhangar.core.errors import (
    BlobUnknown,
    Conflict,
    DigestMismatch,
    NotFound,
    QuotaExceeded,
    Refused,
    SizeMismatch,
    Unavailable,
    one_line,
)
from modelhangar.core.manifests import OLLAMA_CONFIG, ManifestRefs, manifest_annotations, parse_manifest
from modelhangar.core.recency import LastUsed, touch_granularity

log = logging.getLogger("modelhangar.store")
PRESENT = "present"
DELETING = "deleting"
FUSE_REASON = "just used by an upload"
BUSY_REASON = "in use by an upload right now"
MAX_CONFIG_BYTES = 1 << 20
# Statements of the hot read paths, built once (building a select costs more than running it).
_BLOB_ROW = sa.select(t.blobs.c.state, t.blobs.c.size, t.blobs.c.touched_at).where(
    t.blobs.c.digest == sa.bindparam("digest")
)
_MANIFEST_COLUMNS = (t.manifests.c.digest, t.manifests.c.content, t.manifests.c.media_type)
_MANIFEST_BY_TAG = permissions.visible_variants(
    sa.select(*_MANIFEST_COLUMNS)
    .select_from(
        t.tags.join(t.repositories).join(t.manifests, t.manifests.c.digest == t.tags.c.manifest_digest)
    )
    .where(
        t.repositories.c.name_key == sa.bindparam("repo_key"), t.tags.c.name_key == sa.bindparam("tag_key")
    )
)
_MANIFEST_IN_REPOSITORY = permissions.visible_variants(
    sa.select(*_MANIFEST_COLUMNS)
    .select_from(t.repo_manifests.join(t.repositories).join(t.manifests))
    .where(
        t.repositories.c.name_key == sa.bindparam("repo_key"),
        t.repo_manifests.c.manifest_digest == sa.bindparam("digest"),
    )
)


def _repository_keys(
    byte_order: sa.ColumnElement[str], *, page: bool, after: bool
) -> dict[str, sa.Select[Any]]:
    """Repository keys holding a manifest from `lo` (or, `after`, from after the key `after`) up to
    `hi`, in byte order (`byte_order`: the key, on PostgreSQL in collation "C"), `limit` of them for a
    `page`. One bound on each side, so the index is searched from where the page starts. Built once,
    so a catalog reads its rows with no per-row object on SQLite (`Catalog.stream`)."""
    start = byte_order > sa.bindparam("after") if after else byte_order >= sa.bindparam("lo")
    q = (
        sa.select(t.repositories.c.name_key)
        .where(
            start,
            byte_order < sa.bindparam("hi"),
            sa.exists().where(t.repo_manifests.c.repository_id == t.repositories.c.id),
        )
        .order_by(byte_order)
    )
    return permissions.visible_variants(q.limit(sa.bindparam("limit", type_=sa.Integer)) if page else q)


_KEYS = {
    (sqlite, page, after): _repository_keys(
        t.repositories.c.name_key if sqlite else t.repositories.c.name_key.collate("C"),
        page=page,
        after=after,
    )
    for sqlite in (True, False)
    for page in (True, False)
    for after in (True, False)
}


@dataclass(frozen=True)
class BlobCommit:
    digest: str
    size: int
    created: bool


@dataclass(frozen=True)
class TagRecord:
    """A tagged model as every face lists it."""

    repository: str
    tag: str
    manifest_digest: str
    media_type: str
    total_size: int
    details_json: str | None
    """Ollama-style details as stored (JSON text), None when the manifest has none."""
    created_at: float
    modified_at: float
    last_used_at: float
    owner: str | None

    @property
    def details(self) -> dict[str, Any] | None:
        return json.loads(self.details_json) if self.details_json else None


Statements = Callable[[sa.Connection], None]
"""Extra catalog statements a caller runs inside one of the store's transactions."""


@dataclass(frozen=True)
class Referrer:
    """A manifest that names another as its `subject`, as the referrers API lists it."""

    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str]


@dataclass
class Released:
    """What releasing references did inside one transaction.

    `blobs` (and `bytes`) were marked for deletion now; `deferred` blobs are unreferenced but were used
    by a writer within the reuse fuse (or are held by one right now): each is reclaimed at `due[d]` by
    the timer of `core/reclaim.py`, for the reason `why[d]`. `untagged` are memberships left untagged.
    """

    manifests: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    bytes: int = 0
    deferred: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    untagged: list[str] = field(default_factory=list)


class _Unset:
    """The default of an argument that may also be None."""


UNSET = _Unset()


def now() -> float:
    return time.time()


class Store:
    """One data directory: the catalog plus the blob files it describes."""

    def __init__(self, settings: Settings, *, migrate: bool = True, gate: bool = True) -> None:
        """Open the store; it holds the blob-location gate shared (`core/blob_location.py`) unless
        `gate` is off (`hangar migrate-blobs`, which holds it alone), and refuses a HANGAR_BLOBS that
        is not the location its catalog records (README, "Moving blobs to another place")."""
        self.settings = settings
        settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.catalog = Catalog(settings.database_url, lock_dir=settings.home)
        self._gate: AbstractContextManager[bool] | None = None
        try:
            if gate:
                shared = self.catalog.gate(blob_location.GATE, shared=True)
                if not shared.__enter__():
                    shared.__exit__(None, None, None)
                    raise blob_location.migration_running(settings.home)
                self._gate = shared
            if migrate:
                self.catalog.migrate()
                blob_location.check(self.catalog, settings.blobs, settings.home)
            self.blobs: BlobStore = open_blob_store(settings, self.catalog)
        except BaseException:
            self._release_gate()
            self.catalog.dispose()
            raise
        self.last_used = LastUsed(self.catalog)
        self._get_tag: sa.Select[Any] | None = None

    def _release_gate(self) -> None:
        if self._gate is not None:
            gate, self._gate = self._gate, None
            with contextlib.suppress(Exception):  # a dropped connection has released it already
                gate.__exit__(None, None, None)

    @property
    def reuse_fuse(self) -> float:
        """How recently a writer must have used a blob for a delete to leave it to a timer (README):
        the fuse plus the touch granularity, since a reuse at t may leave the touch at t - g."""
        fuse = self.settings.reuse_fuse
        return fuse + touch_granularity(fuse)

    def close(self) -> None:
        try:
            self.last_used.flush()
        finally:
            self.blobs.close()
            self._release_gate()
        self.catalog.dispose()

    # ------------------------------------------------------------------ blob rows and locks

    def _insert_ignore(self, conn: sa.Connection, table: sa.Table, values: dict[str, Any]) -> None:
        dialect = sqlite_dialect if self.catalog.is_sqlite else pg_dialect
        conn.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())

    def _lock_blob(self, conn: sa.Connection, digest: str, *, skip_locked: bool = False) -> Any:
        q = sa.select(t.blobs.c.state, t.blobs.c.size, t.blobs.c.touched_at).where(t.blobs.c.digest == digest)
        return conn.execute(q.with_for_update(skip_locked=skip_locked)).first()

    def _blob_referenced(self, conn: sa.Connection, digest: str) -> bool:
        q = sa.select(sa.literal(1)).where(t.manifest_blobs.c.blob_digest == digest).limit(1)
        return conn.execute(q).first() is not None

    # ------------------------------------------------------------------ blobs

    @retrying
    def blob_size(self, digest: str) -> int | None:
        """Size of a present blob, or None (a blob being deleted looks absent)."""
        row = self._read_one(_BLOB_ROW, digest=digest)
        return None if row is None or row.state != PRESENT else int(row.size)

    @retrying
    def reuse_blob(self, digest: str) -> int | None:
        """Claim a present blob for an upcoming manifest (a write: it resets the GC fuse).

        The touch is written only when the stored one is older than the touch granularity; a
        fresher one answers from a read snapshot (see `core/recency.py`)."""
        row = self._read_one(_BLOB_ROW, digest=digest)
        if row is None or row.state != PRESENT:
            return None
        granularity = touch_granularity(self.settings.reuse_fuse)
        if granularity > 0 and row.touched_at >= now() - granularity:
            return int(row.size) if self.blobs.exists(digest) else None
        with self.catalog.write() as conn:
            row = self._lock_blob(conn, digest)
            if row is None or row.state != PRESENT or not self.blobs.exists(digest):
                return None
            conn.execute(t.blobs.update().where(t.blobs.c.digest == digest).values(touched_at=now()))
            return int(row.size)

    def blob_writer(self) -> BlobWriter:
        return self.blobs.writer()

    def commit_blob(
        self, writer: BlobWriter, expected: str | None = None, *, also: Statements | None = None
    ) -> BlobCommit:
        """Finish an upload: verify its digest, then install it under the row lock (running `also` in
        that same transaction)."""
        try:
            digest = writer.finish()
        except BaseException:
            writer.discard()
            raise
        if expected is not None and digest != str(parse_digest(expected)):
            writer.discard()
            raise DigestMismatch(str(parse_digest(expected)), digest)
        created = False
        try:
            created = self._install_blob(
                digest, writer.size, lambda: self.blobs.install(writer, digest), also
            )
        finally:
            if not created:
                writer.discard()
        return BlobCommit(digest=digest, size=writer.size, created=created)

    def _install_blob(
        self, digest: str, size: int, install: Callable[[], None], also: Statements | None = None
    ) -> bool:
        """Under the row lock: touch the blob if present, else `install()` it and mark it present;
        either way run `also(conn)` in the same transaction.

        Run again (`retrying`) when the catalog's connection is lost before the commit. The bytes
        installed by a try whose transaction was lost stay in place with no row; the next try marks
        them present under the row lock, as a deleter or the orphan sweep only removes a file under
        that lock (README, "Safety rules"). If one did so in between, nothing is kept: `Unavailable`."""
        installed = False

        def put_in_place() -> None:
            nonlocal installed
            if not installed:
                install()
                installed = True
            elif not self.blobs.exists(digest):
                raise Unavailable("the catalog database went away during the upload; nothing was kept")

        @retrying
        def attempt() -> bool:
            with self.catalog.write() as conn:
                if also is not None:
                    also(conn)
                while True:  # a deleter finishing (phase 2) may drop the row between our insert and lock
                    self._insert_ignore(
                        conn,
                        t.blobs,
                        {
                            "digest": digest,
                            "size": 0,
                            "state": DELETING,
                            "created_at": now(),
                            "touched_at": 0.0,
                        },
                    )
                    row = self._lock_blob(conn, digest)
                    if row is not None:
                        break
                ts = now()
                if row.state == PRESENT and self.blobs.exists(digest):
                    conn.execute(t.blobs.update().where(t.blobs.c.digest == digest).values(touched_at=ts))
                    return False
                put_in_place()
                done = conn.execute(
                    t.blobs.update()
                    .where(t.blobs.c.digest == digest)
                    .values(state=PRESENT, size=size, created_at=ts, touched_at=ts)
                )
                if done.rowcount != 1:  # cannot happen under the row lock; never report a blob with no row
                    raise RuntimeError(f"blob row {digest} vanished under its lock")
                return True

        return attempt()

    def import_blob_file(
        self, path: Path, expected: str, *, known_digest: str | None = None, also: Statements | None = None
    ) -> BlobCommit:
        """Install an existing regular file as the blob `expected`: a hard link where the filesystem
        allows, else a copy; raises DigestMismatch (keeping nothing) unless the content matches.

        `known_digest` is the content's digest when the caller hashed the bytes as it wrote them
        (into a file no one else writes); the file is then not read back to hash it again. `also`
        runs in the transaction that installs the blob (an upload session ends in it).

        A linked blob shares its inode with `path`; that is safe because blob files are only ever
        renamed or unlinked, never written in place. Symlinks are not followed.
        """
        want = str(parse_digest(expected))
        local = self.blobs
        if not isinstance(local, LocalBlobStore):  # an object store: stream the file in
            return self._copy_in(path, want, also)
        tmp = local.tmp_dir / f"import-{uuid.uuid4().hex}"
        try:
            os.link(path, tmp, follow_symlinks=False)
        except OSError:
            return self._copy_in(path, want, also)
        try:
            if not stat.S_ISREG(os.lstat(tmp).st_mode):
                raise OSError(f"{path}: not a regular file")
            # Hash what we now hold, not what the path may point at later.
            digest = known_digest if known_digest is not None else sha256_file(tmp)
            if digest != want:
                raise DigestMismatch(want, digest)
            size = os.lstat(tmp).st_size
            created = self._install_blob(digest, size, lambda: local.link_or_copy_in(tmp, digest), also)
            return BlobCommit(digest=digest, size=size, created=created)
        finally:
            tmp.unlink(missing_ok=True)

    def _copy_in(self, path: Path, want: str, also: Statements | None) -> BlobCommit:
        w = self.blob_writer()
        try:
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise OSError(f"{path}: not a regular file")
                while chunk := f.read(max(COPY_CHUNK, 8 << 20)):
                    w.write(chunk)
        except BaseException:
            w.discard()
            raise
        return self.commit_blob(w, want, also=also)

    def put_blob_bytes(self, data: bytes, expected: str | None = None) -> BlobCommit:
        w = self.blob_writer()
        w.write(data)
        return self.commit_blob(w, expected)

    def read_blob(self, digest: str, limit: int | None = None) -> bytes:
        if self.blob_size(digest) is None:
            raise NotFound(f"blob {digest} not found")
        with self.blobs.open(digest) as f:
            return f.read() if limit is None else f.read(limit)

    # ------------------------------------------------------------------ repositories and tags

    def _repository_id(
        self,
        conn: sa.Connection,
        name: str,
        *,
        create: bool,
        actor: Actor | None = None,
        need: permissions.Need | None = None,
        owner: str | _Unset | None = UNSET,
        visibility: str | None = None,
    ) -> int | None:
        """The id of `_repository_row`'s row, or None."""
        row = self._repository_row(
            conn, name, create=create, actor=actor, need=need, owner=owner, visibility=visibility
        )
        return None if row is None else int(row.id)

    def _repository_row(
        self,
        conn: sa.Connection,
        name: str,
        *,
        create: bool,
        actor: Actor | None = None,
        need: permissions.Need | None = None,
        owner: str | _Unset | None = UNSET,
        visibility: str | None = None,
    ) -> Any:
        """The repository's row, checked for `need` by `actor` (NotFound / Denied); with `create`, a new
        repository when there is none, owned as `core/permissions.py` says unless `owner` is given."""
        key = name.lower()
        q = sa.select(t.repositories).where(t.repositories.c.name_key == key)
        if create:  # writers hold the repository row, so an emptied repository is not dropped under them
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is not None:
            if need is not None:
                permissions.check(actor or Actor(), need, row.name, row.owner, row.visibility)
            return row
        if not create:
            return None
        if isinstance(owner, _Unset):
            owner = permissions.owner_for_new(conn, actor or Actor(), name)
        created = now()
        self._insert_ignore(
            conn,
            t.repositories,
            {
                "name": name,
                "name_key": key,
                "owner": owner,
                "created_at": created,
                "modified_at": created,
                "visibility": visibility or self.settings.default_visibility,
            },
        )
        row = conn.execute(q).first()
        assert row is not None
        if need is not None:  # another writer created it first
            permissions.check(actor or Actor(), need, row.name, row.owner, row.visibility)
        return row

    def _check_quota(self, conn: sa.Connection, repo: Any, digest: str, total: int, new_tag: bool) -> None:
        """Refuse (QuotaExceeded) a manifest that would take the owner of `repo` (its row) past its
        quota (README)."""
        repo_id, owner = int(repo.id), repo.owner
        if owner is None:
            return
        quota = conn.execute(
            sa.select(t.principals.c.quota_bytes, t.principals.c.quota_models).where(
                t.principals.c.name == owner
            )
        ).first()
        if quota is None or (quota.quota_bytes is None and quota.quota_models is None):
            return
        owned = sa.select(t.repositories.c.id).where(t.repositories.c.owner == owner).scalar_subquery()
        rm = t.repo_manifests
        member = conn.execute(
            sa.select(sa.literal(1)).where(rm.c.repository_id == repo_id, rm.c.manifest_digest == digest)
        ).first()
        if quota.quota_bytes is not None and member is None:
            used = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(t.manifests.c.total_size), 0))
                .select_from(rm.join(t.manifests, t.manifests.c.digest == rm.c.manifest_digest))
                .where(rm.c.repository_id.in_(owned))
            ).scalar()
            if int(used or 0) + total > quota.quota_bytes:
                after, cap = int(used or 0) + total, quota.quota_bytes
                raise QuotaExceeded(f"{owner} would store {after} bytes, over its quota of {cap}")
        if quota.quota_models is not None and new_tag:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(t.tags).where(t.tags.c.repository_id.in_(owned))
            ).scalar()
            if int(count or 0) + 1 > quota.quota_models:
                raise QuotaExceeded(
                    f"{owner} would hold {int(count or 0) + 1} models, over its quota of {quota.quota_models}"
                )

    def _tag_query(self) -> sa.Select[Any]:
        return (
            sa.select(  # in TagRecord's field order: rows become records positionally
                t.repositories.c.name.label("repository"),
                t.tags.c.name.label("tag"),
                t.tags.c.manifest_digest,
                t.manifests.c.media_type,
                t.manifests.c.total_size,
                t.manifests.c.details,
                t.tags.c.created_at,
                t.tags.c.modified_at,
                t.tags.c.last_used_at,
                t.repositories.c.owner,
            )
            .select_from(t.tags)
            .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
            .join(t.manifests, t.manifests.c.digest == t.tags.c.manifest_digest)
        )

    @staticmethod
    def _tag_record(row: sa.Row[Any]) -> TagRecord:
        return TagRecord(*row)  # type: ignore[call-arg]  # the query selects the fields in order

    @staticmethod
    def _visible_to(q: Any, actor: Actor | None) -> Any:
        """`q` (over repositories) kept to what `actor` may read; everything for None (the store)."""
        clause = None if actor is None else permissions.visible(actor)
        return q if clause is None else q.where(clause)

    def _recent(self, record: TagRecord) -> TagRecord:
        """The record with a use this process noted but has not written yet (`core/recency.py`)."""
        used = self.last_used.pending(record.repository, record.tag)
        return record if used is None or used <= record.last_used_at else replace(record, last_used_at=used)

    @retrying
    def get_tag(self, repository: str, tag: str, *, actor: Actor | None = None) -> TagRecord | None:
        """A tag by repository and tag name, matched case-insensitively as Ollama does (None if `actor`
        may not read it)."""
        if actor is not None and not actor.admin:
            q = self._tag_query().where(
                t.repositories.c.name_key == repository.lower(), t.tags.c.name_key == tag.lower()
            )
            with self.catalog.read() as conn:
                found = conn.execute(self._visible_to(q, actor)).first()
            return None if found is None else self._recent(self._tag_record(found))
        if self._get_tag is None:
            self._get_tag = self._tag_query().where(
                t.repositories.c.name_key == sa.bindparam("repo_key"),
                t.tags.c.name_key == sa.bindparam("tag_key"),
            )
        row = self._read_one(self._get_tag, repo_key=repository.lower(), tag_key=tag.lower())
        return None if row is None else self._recent(self._tag_record(row))

    @retrying
    def list_tags(self, repository: str | None = None, *, actor: Actor | None = None) -> list[TagRecord]:
        """Every live tag (newest first) `actor` may read, or those of one repository."""
        q = self._tag_query().order_by(t.tags.c.modified_at.desc())
        if repository is not None:
            q = q.where(t.repositories.c.name_key == repository.lower())
        with self.catalog.read() as conn:
            records = [self._tag_record(r) for r in conn.execute(self._visible_to(q, actor))]
        return [self._recent(r) for r in records] if self.last_used.has_pending() else records

    def iter_listing(
        self, batch: int = listing.BATCH, *, actor: Actor | None = None
    ) -> Generator[list[str], None, None]:
        """Every listed tag `actor` may read, newest first, as batches of their listing entries (JSON
        text, see `core/listing.py`), read from one snapshot and streamed: no per-row records, since
        listings can hold 100,000 models. Close the iterator to release the snapshot."""
        with self.catalog.read() as conn:
            yield from listing.stream(self.catalog, conn, actor, batch)

    def find_manifest(
        self,
        repository: str,
        *,
        tag: str | None = None,
        digest: str | None = None,
        actor: Actor | None = None,
    ) -> tuple[str, bytes, str] | None:
        """A repository's manifest by tag (matched case-insensitively) or by digest, in one query:
        (digest, content, media type), or None (also when `actor` may not read the repository)."""
        if tag is not None:
            q, params = permissions.for_reader(_MANIFEST_BY_TAG, actor)
            row = self._read_one(q, **params, repo_key=repository.lower(), tag_key=tag.lower())
        else:
            q, params = permissions.for_reader(_MANIFEST_IN_REPOSITORY, actor)
            row = self._read_one(q, **params, repo_key=repository.lower(), digest=digest)
        return None if row is None else (row.digest, bytes(row.content), row.media_type)

    def _read_one(self, statement: sa.Executable, **params: Any) -> Any:
        return self.catalog.read_once(statement, params)

    @retrying
    def list_repositories(self, *, actor: Actor | None = None) -> list[str]:
        """Repositories that hold at least one manifest and `actor` may read, sorted."""
        q = (
            sa.select(t.repositories.c.name)
            .where(sa.exists().where(t.repo_manifests.c.repository_id == t.repositories.c.id))
            .order_by(t.repositories.c.name)
        )
        with self.catalog.read() as conn:
            return [r.name for r in conn.execute(self._visible_to(q, actor))]

    @retrying
    def repository(self, name: str, *, actor: Actor | None = None) -> Any:
        """The repository's catalog row if it exists and `actor` may read it, else None."""
        q = sa.select(t.repositories).where(t.repositories.c.name_key == name.lower())
        with self.catalog.read() as conn:
            return conn.execute(self._visible_to(q, actor)).first()

    @retrying
    def require(self, actor: Actor, need: permissions.Need, repository: str) -> Any:
        """The repository's row, checked for `need` by `actor` (NotFound / Denied); None if it does not
        exist (a write may create it)."""
        with self.catalog.read() as conn:
            return permissions.access(conn, actor, repository, need)

    @retrying
    def require_writable(self, actor: Actor, repository: str) -> None:
        """Raise NotFound / Denied unless `actor` may write `repository`, or create it if it does not
        exist (its namespace is the actor's, one of its organisations', or no account's)."""
        with self.catalog.read() as conn:
            if permissions.access(conn, actor, repository, "write") is None:
                permissions.owner_for_new(conn, actor, repository)

    @retrying
    def set_visibility(self, repository: str, visibility: str, *, actor: Actor) -> None:
        """Make a model public or private (its owner, its organisation's members and admins only)."""
        if visibility not in permissions.VISIBILITIES:
            raise ValueError(f"visibility must be one of {', '.join(permissions.VISIBILITIES)}")
        with self.catalog.write() as conn:
            repo_id = self._repository_id(conn, repository, create=False, actor=actor, need="write")
            if repo_id is None:
                raise NotFound(f"{repository} not found")
            conn.execute(
                t.repositories.update().where(t.repositories.c.id == repo_id).values(visibility=visibility)
            )

    def _repository_keys_query(
        self, prefix: str, after: str | None, limit: int | None, actor: Actor | None
    ) -> tuple[Any, dict[str, Any]]:
        """The statement of `repository_keys` and its parameters: the keys that start with `prefix` are
        the range from `prefix` to the next string after all of them (byte order is code point order)."""
        past = after is not None and after >= prefix
        q, params = permissions.for_reader(_KEYS[self.catalog.is_sqlite, limit is not None, past], actor)
        # every key with the prefix sorts before this one; with none, before any non-ASCII text, and
        # repository names are ASCII (core/names.py)
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\x80"
        params = {**params, "hi": hi, **({"after": after} if past else {"lo": prefix})}
        if limit is not None:
            params["limit"] = limit
        return q, params

    @retrying
    def repository_keys(
        self, prefix: str, after: str | None = None, limit: int | None = None, *, actor: Actor | None = None
    ) -> list[str]:
        """Keys (lowercased names) of repositories that hold a manifest, start with `prefix` and `actor`
        may read, in byte order, after the key `after`, at most `limit` of them: a page of a catalog
        in one query."""
        q, params = self._repository_keys_query(prefix, after, limit, actor)
        with self.catalog.read() as conn:
            batches = self.catalog.stream(conn, q, params, min(limit or 5000, 5000))
            return [r[0] for rows in batches for r in rows]

    def iter_repository_keys(
        self, prefix: str, after: str | None = None, batch: int = 5000, *, actor: Actor | None = None
    ) -> Generator[Sequence[str], None, None]:
        """All of `repository_keys`, as batches streamed from one statement on one snapshot (a whole
        catalog, with flat memory). Close the iterator to release the snapshot."""
        q, params = self._repository_keys_query(prefix, after, None, actor)
        with self.catalog.read() as conn:
            batches = self.catalog.stream(conn, q, params, batch)
            try:
                for rows in batches:
                    yield [r[0] for r in rows]
            finally:
                batches.close()

    @retrying
    def tag_names(
        self,
        repository: str,
        after: str | None = None,
        limit: int | None = None,
        *,
        actor: Actor | None = None,
    ) -> list[str]:
        """Names of the tags of one repository `actor` may read, in byte order, after `after`, at most
        `limit`: a page of a tags list in one query on the tags' primary key."""
        name = t.tags.c.name
        order = name if self.catalog.is_sqlite else name.collate("C")
        q = (
            sa.select(name)
            .select_from(t.tags.join(t.repositories, t.repositories.c.id == t.tags.c.repository_id))
            .where(t.repositories.c.name_key == repository.lower())
            .order_by(order)
        )
        if after is not None:
            q = q.where(order > after)
        if limit is not None:
            q = q.limit(limit)
        with self.catalog.read() as conn:
            return list(conn.execute(self._visible_to(q, actor)).scalars())

    @retrying
    def get_manifest(self, digest: str) -> tuple[bytes, str] | None:
        """Bytes and media type of a live manifest."""
        with self.catalog.read() as conn:
            row = conn.execute(
                sa.select(t.manifests.c.content, t.manifests.c.media_type).where(
                    t.manifests.c.digest == digest
                )
            ).first()
        return None if row is None else (bytes(row.content), row.media_type)

    def referrers(
        self, repository: str, subject: str, artifact_type: str | None = None, *, actor: Actor | None = None
    ) -> list[Referrer]:
        """Manifests of a repository whose `subject` is `subject` (oldest first), optionally of one type."""
        q = (
            sa.select(
                t.manifests.c.digest,
                t.manifests.c.media_type,
                t.manifests.c.size,
                t.manifests.c.artifact_type,
                t.manifests.c.content,
            )
            .select_from(t.manifests.join(t.repo_manifests).join(t.repositories))
            .where(t.repositories.c.name_key == repository.lower(), t.manifests.c.subject_digest == subject)
            .order_by(t.repo_manifests.c.created_at, t.manifests.c.digest)
        )
        q = self._visible_to(q, actor)
        if artifact_type is not None:
            q = q.where(t.manifests.c.artifact_type == artifact_type)
        with self.catalog.read() as conn:
            return [
                Referrer(
                    r.digest,
                    r.media_type,
                    int(r.size),
                    r.artifact_type,
                    manifest_annotations(bytes(r.content)),
                )
                for r in conn.execute(q)
            ]

    def manifest_in_repository(self, repository: str, digest: str, *, actor: Actor | None = None) -> bool:
        q = (
            sa.select(sa.literal(1))
            .select_from(t.repo_manifests.join(t.repositories))
            .where(
                t.repositories.c.name_key == repository.lower(), t.repo_manifests.c.manifest_digest == digest
            )
        )
        q = self._visible_to(q, actor)
        with self.catalog.read() as conn:
            return conn.execute(q).first() is not None

    def mark_used(self, repository: str, tag: str) -> None:
        """Record that a model was pulled, shown or otherwise used (for `prune --unused-for`); a
        server writes these in batches (`core/recency.py`)."""
        self.last_used.note(repository, tag, now())

    # ------------------------------------------------------------------ manifests

    def _details(self, refs: ManifestRefs) -> dict[str, Any] | None:
        cfg = refs.config
        if cfg is None or cfg.media_type != OLLAMA_CONFIG or cfg.size > MAX_CONFIG_BYTES:
            return None
        try:
            doc = jsonsafe.loads(self.read_blob(cfg.digest, MAX_CONFIG_BYTES))
        except (ValueError, OSError, NotFound):
            return None
        from modelhangar.core.gguf_info import details_from_config  # imports numpy: only when needed

        return details_from_config(doc)

    @retrying
    def put_manifest(
        self,
        repository: str,
        tag: str | None,
        content: bytes,
        media_type: str | None = None,
        *,
        owner: str | None = None,
        actor: Actor | None = None,
        exact_tag: bool = False,
        keep_untagged: bool = False,
    ) -> tuple[str, Released]:
        """Store a manifest in a repository (and point a tag at it) once all it names is present.

        Tags match case-insensitively, as Ollama's names do. With `exact_tag` (OCI tags are
        case-sensitive), moving a tag spelled differently, such as `V1` over `v1`, raises Conflict
        instead, and nothing changes. A tag moved off another manifest removes that version through
        the planner (`Planner.overwrite_in`, as `actor`): its blockers raise Refused and nothing
        changes; with `keep_untagged` (the registry's rule) the old manifest stays, untagged.
        Returns the digest and what the overwrite released.
        """
        refs = parse_manifest(content, media_type)
        digest = str(sha256_digest(content))
        details = self._details(refs)
        released = Released()
        try:
            with self.catalog.write() as conn:
                # Lock order everywhere: tag, then manifest, then blobs (sorted): no deadlocks.
                ts = now()
                repo = self._repository_row(
                    conn,
                    repository,
                    create=True,
                    actor=actor,
                    need="write",
                    **({} if owner is None else {"owner": owner}),
                )
                repo_id = int(repo.id)
                existing_tag = None
                if tag is not None:
                    existing_tag = conn.execute(
                        sa.select(t.tags.c.name_key)
                        .where(t.tags.c.repository_id == repo_id, t.tags.c.name_key == tag.lower())
                        .with_for_update()
                    ).first()
                manifest_row = {
                    "digest": digest,
                    "media_type": refs.media_type,
                    "content": content,
                    "size": len(content),
                    "total_size": refs.total_size,
                    "details": json.dumps(details) if details is not None else None,
                    "created_at": ts,
                    "subject_digest": refs.subject.digest if refs.subject else None,
                    "artifact_type": refs.artifact_type if refs.subject else None,
                }
                lock_manifest = (
                    sa.select(t.manifests.c.digest).where(t.manifests.c.digest == digest).with_for_update()
                )
                while True:  # a concurrent release may delete the row between our insert and our lock
                    self._insert_ignore(conn, t.manifests, manifest_row)
                    if conn.execute(lock_manifest).first() is not None:
                        break
                missing: list[str] = []
                wrong: list[tuple[str, int, int]] = []  # digest, stored size, a size the manifest says
                said: dict[str, set[int]] = {}
                for desc in (*refs.blobs, *refs.children):
                    said.setdefault(desc.digest, set()).add(desc.size)
                for d in sorted({b.digest for b in refs.blobs}):
                    row = self._lock_blob(conn, d)
                    if row is None or row.state != PRESENT or not self.blobs.exists(d):
                        missing.append(d)
                        continue
                    wrong += [(d, int(row.size), n) for n in said[d] if n != row.size]
                    conn.execute(
                        t.blobs.update()
                        .where(t.blobs.c.digest == d)
                        .values(touched_at=ts, ever_referenced=True)
                    )
                for child in sorted({c.digest for c in refs.children}):
                    q = sa.select(t.manifests.c.size).where(t.manifests.c.digest == child).with_for_update()
                    found = conn.execute(q).first()
                    if found is None:
                        missing.append(child)
                        continue
                    wrong += [(child, int(found.size), n) for n in said[child] if n != found.size]
                if missing:
                    raise BlobUnknown(missing)
                if wrong:  # sizes are what every client trusts to allocate and to bound its reads
                    d, size, claimed = wrong[0]
                    raise SizeMismatch(f"{d} is {size} bytes, the manifest says {claimed}")
                for b in {b.digest for b in refs.blobs}:
                    self._insert_ignore(conn, t.manifest_blobs, {"manifest_digest": digest, "blob_digest": b})
                for c in {c.digest for c in refs.children}:
                    self._insert_ignore(
                        conn, t.manifest_children, {"parent_digest": digest, "child_digest": c}
                    )
                self._check_quota(
                    conn, repo, digest, refs.total_size, new_tag=tag is not None and existing_tag is None
                )
                self._insert_ignore(
                    conn,
                    t.repo_manifests,
                    {
                        "repository_id": repo_id,
                        "manifest_digest": digest,
                        "created_at": ts,
                        "untagged_at": ts if tag is None else None,
                    },
                )
                if tag is not None:
                    released = self._point_tag(
                        conn,
                        repo_id,
                        tag,
                        digest,
                        ts,
                        exact=exact_tag,
                        actor=actor,
                        keep_untagged=keep_untagged,
                    )
                if repo.kind is not None:  # a face's model object: its own bookkeeping of versions
                    model_rules.pushed(self, conn, repo, digest, refs, ts)
                repo_figures.refresh(conn, [repo_id])
        except Refused as e:
            self._audit_refused(e)
            raise
        self.finish_deletions(released.blobs)
        return digest, released

    def _audit_refused(self, e: Refused) -> None:
        from modelhangar.core.planner import Plan, Planner

        if isinstance(e.plan, Plan):
            Planner(self).audit_refusal(e.plan, "overwrite")

    def _point_tag(
        self,
        conn: sa.Connection,
        repo_id: int,
        tag: str,
        digest: str,
        ts: float,
        *,
        exact: bool = False,
        actor: Actor | None = None,
        keep_untagged: bool = False,
    ) -> Released:
        """Point a tag at a manifest; the version it pointed at before goes through the planner."""
        key = tag.lower()
        old = conn.execute(
            sa.select(t.tags)
            .where(t.tags.c.repository_id == repo_id, t.tags.c.name_key == key)
            .with_for_update()
        ).first()
        conn.execute(
            t.repo_manifests.update()
            .where(t.repo_manifests.c.repository_id == repo_id, t.repo_manifests.c.manifest_digest == digest)
            .values(untagged_at=None)
        )
        if old is None:
            conn.execute(
                t.tags.insert().values(
                    repository_id=repo_id,
                    name_key=key,
                    name=tag,
                    manifest_digest=digest,
                    created_at=ts,
                    modified_at=ts,
                    last_used_at=ts,
                )
            )
            listing.refresh(conn, repo_id, key)  # in the tag's row, in this transaction
            return Released()
        if exact and old.name != tag and old.manifest_digest != digest:
            raise Conflict(
                f'tag "{tag}" would replace tag "{old.name}": tags that differ only in case are one tag here'
            )
        conn.execute(
            t.tags.update()
            .where(t.tags.c.repository_id == repo_id, t.tags.c.name_key == key)
            .values(manifest_digest=digest, modified_at=ts, last_used_at=ts)
        )
        listing.refresh(conn, repo_id, key)
        if old.manifest_digest == digest:
            return Released()
        from modelhangar.core.planner import Planner  # the planner builds on the store

        return Planner(self).overwrite_in(
            conn,
            actor or Actor(),
            repo_id=repo_id,
            old=old,
            new_digest=digest,
            ts=ts,
            keep_untagged=keep_untagged,
        )

    @retrying
    def copy_tag(
        self,
        src_repository: str,
        src_tag: str,
        dst_repository: str,
        dst_tag: str,
        *,
        actor: Actor | None = None,
    ) -> TagRecord:
        """Point dst at src's manifest (blobs are shared, nothing is copied); an overwritten dst's old
        version goes through the planner as in `put_manifest`."""
        try:
            with self.catalog.write() as conn:
                # Repositories first (sorted), then tags, then the manifest: the order every writer uses.
                for name in sorted({src_repository.lower(), dst_repository.lower()}):
                    conn.execute(
                        sa.select(t.repositories.c.id)
                        .where(t.repositories.c.name_key == name)
                        .with_for_update()
                    )
                src_repo = self._repository_id(conn, src_repository, create=False, actor=actor, need="read")
                row = None
                if src_repo is not None:
                    row = conn.execute(
                        sa.select(t.tags.c.manifest_digest)
                        .where(t.tags.c.repository_id == src_repo, t.tags.c.name_key == src_tag.lower())
                        .with_for_update()
                    ).first()
                if row is None:
                    raise NotFound(f"{src_repository}:{src_tag}")
                digest = row.manifest_digest
                conn.execute(
                    sa.select(t.manifests.c.digest).where(t.manifests.c.digest == digest).with_for_update()
                )
                dst = self._repository_row(conn, dst_repository, create=True, actor=actor, need="write")
                dst_repo = int(dst.id)
                ts = now()
                existing = conn.execute(
                    sa.select(t.tags.c.name_key).where(
                        t.tags.c.repository_id == dst_repo, t.tags.c.name_key == dst_tag.lower()
                    )
                ).first()
                self._check_quota(conn, dst, digest, 0, new_tag=existing is None)
                self._insert_ignore(
                    conn,
                    t.repo_manifests,
                    {"repository_id": dst_repo, "manifest_digest": digest, "created_at": ts},
                )
                released = self._point_tag(conn, dst_repo, dst_tag, digest, ts, actor=actor)
                repo_figures.refresh(conn, [dst_repo])
                row = conn.execute(
                    self._tag_query().where(
                        t.tags.c.repository_id == dst_repo, t.tags.c.name_key == dst_tag.lower()
                    )
                ).one()  # read in the same transaction: a delete right after the commit cannot race it
        except Refused as e:
            self._audit_refused(e)
            raise
        self.finish_deletions(released.blobs)
        return self._tag_record(row)

    # ------------------------------------------------------------------ releasing references

    def manifest_live(self, conn: sa.Connection, digest: str) -> bool:
        """Does anything still hold this manifest: a repository, a trash entry, a parent index?"""
        holders = (
            sa.select(sa.literal(1)).where(t.repo_manifests.c.manifest_digest == digest).limit(1),
            sa.select(sa.literal(1)).where(t.trash.c.manifest_digest == digest).limit(1),
            sa.select(sa.literal(1)).where(t.manifest_children.c.child_digest == digest).limit(1),
        )
        return any(conn.execute(q).first() is not None for q in holders)

    def release(
        self,
        conn: sa.Connection,
        *,
        untag_memberships: Iterable[tuple[int, str]] = (),
        keep_untagged: Iterable[tuple[int, str]] = (),
        memberships: Iterable[tuple[int, str]] = (),
        manifests: Iterable[str] = (),
        ts: float | None = None,
        schedule: bool = True,
    ) -> Released:
        """Drop repository memberships, then every manifest and blob nothing holds any longer.

        `untag_memberships` are dropped only if no tag in that repository still points at the
        manifest; `keep_untagged` ones are kept but marked untagged in that case; `memberships` are
        dropped unconditionally. Unreferenced blobs a writer used within the reuse fuse are deferred
        (and, with `schedule`, left to the reclaim timer). Cost grows with the manifests and blobs
        released, never with the size of the store.
        """
        ts = now() if ts is None else ts
        out = Released()
        candidates: set[str] = set(manifests)
        drop = list(memberships)
        for (repo_id, digest), dropping in [
            *(((r, d), True) for r, d in untag_memberships),
            *(((r, d), False) for r, d in keep_untagged),
        ]:
            still_tagged = conn.execute(
                sa.select(sa.literal(1))
                .where(t.tags.c.repository_id == repo_id, t.tags.c.manifest_digest == digest)
                .limit(1)
            ).first()
            if still_tagged is not None:
                continue
            if dropping:
                drop.append((repo_id, digest))
            else:
                conn.execute(
                    t.repo_manifests.update()
                    .where(
                        t.repo_manifests.c.repository_id == repo_id,
                        t.repo_manifests.c.manifest_digest == digest,
                        t.repo_manifests.c.untagged_at.is_(None),
                    )
                    .values(untagged_at=ts)
                )
                out.untagged.append(digest)
        for repo_id, digest in drop:
            conn.execute(
                t.repo_manifests.delete().where(
                    t.repo_manifests.c.repository_id == repo_id, t.repo_manifests.c.manifest_digest == digest
                )
            )
            candidates.add(digest)
            self._drop_repository_if_empty(conn, repo_id)
        repo_figures.refresh(conn, {repo_id for repo_id, _ in drop})
        blob_candidates: set[str] = set()
        queue = sorted(candidates)
        while queue:
            m = queue.pop()
            # A manifest another writer holds is being reused or released by it; GC sweeps
            # whatever is left unheld. Skipping instead of waiting keeps lock order acyclic.
            locked = conn.execute(
                sa.select(t.manifests.c.digest)
                .where(t.manifests.c.digest == m)
                .with_for_update(skip_locked=True)
            ).first()
            if locked is None or self.manifest_live(conn, m):
                continue
            blob_rows = conn.execute(
                sa.select(t.manifest_blobs.c.blob_digest).where(t.manifest_blobs.c.manifest_digest == m)
            ).all()
            child_rows = conn.execute(
                sa.select(t.manifest_children.c.child_digest).where(t.manifest_children.c.parent_digest == m)
            ).all()
            conn.execute(t.manifest_blobs.delete().where(t.manifest_blobs.c.manifest_digest == m))
            conn.execute(t.manifest_children.delete().where(t.manifest_children.c.parent_digest == m))
            conn.execute(t.manifests.delete().where(t.manifests.c.digest == m))
            out.manifests.append(m)
            blob_candidates.update(r.blob_digest for r in blob_rows)
            queue.extend(r.child_digest for r in child_rows)
        self.retire_blobs(conn, blob_candidates, ts, out, schedule=schedule)
        return out

    def retire_blobs(
        self,
        conn: sa.Connection,
        digests: Iterable[str],
        ts: float,
        out: Released,
        *,
        fuse: float | None = None,
        schedule: bool = True,
    ) -> None:
        """Mark unreferenced blobs `deleting` (under their row locks); the caller commits, then calls
        finish_deletions. A blob a writer touched within `fuse` (default: the reuse fuse) of `ts`, or one a
        writer holds right now, is deferred to `out.due`; with `schedule` the reclaim timer gets it."""
        fuse = self.reuse_fuse if fuse is None else fuse
        settled: list[str] = []
        for d in sorted(set(digests)):
            row = self._lock_blob(conn, d, skip_locked=True)
            if row is None:  # held by a writer right now (or gone): look again when the fuse ends
                known = conn.execute(sa.select(t.blobs.c.size).where(t.blobs.c.digest == d)).first()
                if known is not None and not self._blob_referenced(conn, d):
                    out.deferred.append(d)
                    out.sizes[d], out.due[d], out.why[d] = int(known.size), ts + max(fuse, 1.0), BUSY_REASON
                else:
                    settled.append(d)
                continue
            if row.state != PRESENT or self._blob_referenced(conn, d):
                settled.append(d)
                continue
            if row.touched_at > ts - fuse:
                out.deferred.append(d)
                out.sizes[d], out.due[d], out.why[d] = int(row.size), row.touched_at + fuse, FUSE_REASON
                continue
            conn.execute(t.blobs.update().where(t.blobs.c.digest == d).values(state=DELETING))
            out.blobs.append(d)
            out.bytes += int(row.size)
            out.sizes[d] = int(row.size)
            settled.append(d)
        if not schedule:
            return
        if settled:
            conn.execute(t.reclaims.delete().where(t.reclaims.c.digest.in_(settled)))
        for d in out.deferred:
            self._upsert_reclaim(conn, d, out.due[d])

    def _upsert_reclaim(self, conn: sa.Connection, digest: str, due: float) -> None:
        dialect = sqlite_dialect if self.catalog.is_sqlite else pg_dialect
        stmt = dialect.insert(t.reclaims).values(digest=digest, due_at=due)
        conn.execute(stmt.on_conflict_do_update(index_elements=["digest"], set_={"due_at": due}))

    def _drop_repository_if_empty(self, conn: sa.Connection, repo_id: int) -> None:
        conn.execute(sa.select(t.repositories.c.id).where(t.repositories.c.id == repo_id).with_for_update())
        has_any = conn.execute(
            sa.select(sa.literal(1)).where(t.repo_manifests.c.repository_id == repo_id).limit(1)
        ).first()
        if has_any is not None:
            return
        has_tag = conn.execute(
            sa.select(sa.literal(1)).where(t.tags.c.repository_id == repo_id).limit(1)
        ).first()
        has_link = conn.execute(  # blob links (core/repo_blobs.py) need the repository row
            sa.select(sa.literal(1)).where(t.repo_blobs.c.repository_id == repo_id).limit(1)
        ).first()
        if has_tag is None and has_link is None:
            # a model object of a face (a Replicate model, an OpenSearch group) outlives its versions
            conn.execute(
                t.repositories.delete().where(t.repositories.c.id == repo_id, t.repositories.c.kind.is_(None))
            )

    def finish_deletions(self, digests: Sequence[str]) -> int:
        """Second phase: unlink each blob still marked `deleting` and drop its row (one transaction).

        Its callers have committed the first phase, which stands: a catalog that stays unavailable
        through `retrying`'s tries leaves the blobs marked `deleting`, for the next GC round (or start)
        to finish (README, "Safety rules"), and this returns 0."""
        if not digests:
            return 0
        try:
            return self._finish_deletions(sorted(set(digests)))
        except (Unavailable, sa.exc.DBAPIError) as e:  # the catalog or the object store, gone for now
            if isinstance(e, sa.exc.DBAPIError) and not is_retryable(e):
                raise
            log.warning(
                "%d blobs left marked deleting for the next GC round: %s", len(set(digests)), one_line(e)
            )
            return 0

    @retrying
    def _finish_deletions(self, digests: list[str]) -> int:
        removed = 0
        with self.catalog.write() as conn:
            for d in digests:
                row = self._lock_blob(conn, d)
                if row is None or row.state != DELETING:
                    continue
                self.blobs.delete(d)
                conn.execute(t.blobs.delete().where(t.blobs.c.digest == d, t.blobs.c.state == DELETING))
                conn.execute(t.repo_blobs.delete().where(t.repo_blobs.c.blob_digest == d))  # links go with it
                # and so does who uploaded it: bytes uploaded again later are the new uploader's alone
                conn.execute(t.uploader_blobs.delete().where(t.uploader_blobs.c.blob_digest == d))
                removed += 1
        return removed

    def pending_deletions(self) -> list[str]:
        with self.catalog.read() as conn:
            return [
                r.digest for r in conn.execute(sa.select(t.blobs.c.digest).where(t.blobs.c.state == DELETING))
            ]
